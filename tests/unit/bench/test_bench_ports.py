"""A bench stack's servers listen below the ephemeral range, where no client connection holds a port."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tooling.bench import corpus
from tooling.bench.harness import bench_settings


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def test_every_port_a_bench_stack_listens_on_is_below_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    # The scenarios' stack offsets (tooling/bench/*.py) are 0 to 70; the ports are what matters, not
    # the corpus's PKI (which ``bench_settings`` would otherwise make on disk).
    monkeypatch.setattr(corpus, "trust_settings", lambda: {})
    limit = min(_ephemeral_start(), 32768)
    for offset in range(0, 80):
        s = bench_settings("ports", offset)
        s3 = urlsplit(s.s3_endpoint).port or 0
        ports = [int(s.bootstrap_servers.rsplit(":", 1)[1]), s.ingest_port, s.report_port,
                 *(s3 + d for d in range(15)),  # weed mini: S3 on P, its other listeners on P+1..P+14
                 *(port for _, port in s.regions().values())]
        outside = sorted(p for p in ports if not 30_000 <= p < limit)
        assert not outside, f"offset {offset}: {outside}"
