"""How many worker threads the local stack gives its own servers (the S3 server, the broker)."""

from __future__ import annotations

from pathlib import Path

from tooling.stack.component import server_threads_env, usable_cores


def test_a_quarter_of_the_cores_and_at_least_one() -> None:
    assert server_threads_env("GOMAXPROCS", environ={}, cores=2) == {"GOMAXPROCS": "1"}
    assert server_threads_env("GOMAXPROCS", environ={}, cores=1) == {"GOMAXPROCS": "1"}
    assert server_threads_env("TOKIO_WORKER_THREADS", environ={}, cores=16) == {"TOKIO_WORKER_THREADS": "4"}


def test_what_the_environment_sets_is_kept() -> None:
    # An operator's own setting reaches the server unchanged: nothing is added over it.
    assert server_threads_env("GOMAXPROCS", environ={"GOMAXPROCS": "8"}, cores=2) == {}


def test_a_cgroup_cpu_quota_caps_the_cores(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")  # a container limited to one CPU
    assert usable_cores(cpu_max) == 1
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: 2 threads may run at once
    assert usable_cores(cpu_max) == min(2, usable_cores(tmp_path / "absent"))
    cpu_max.write_text("max 100000\n")
    assert usable_cores(cpu_max) == usable_cores(tmp_path / "absent") >= 1
