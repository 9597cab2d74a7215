"""How many worker threads the local stack gives its own servers (the S3 server, the broker)."""

from __future__ import annotations

from tooling.stack.component import server_threads_env


def test_a_quarter_of_the_cores_and_at_least_one() -> None:
    assert server_threads_env("GOMAXPROCS", environ={}, cores=2) == {"GOMAXPROCS": "1"}
    assert server_threads_env("GOMAXPROCS", environ={}, cores=1) == {"GOMAXPROCS": "1"}
    assert server_threads_env("TOKIO_WORKER_THREADS", environ={}, cores=16) == {"TOKIO_WORKER_THREADS": "4"}


def test_what_the_environment_sets_is_kept() -> None:
    # An operator's own setting reaches the server unchanged: nothing is added over it.
    assert server_threads_env("GOMAXPROCS", environ={"GOMAXPROCS": "8"}, cores=2) == {}
