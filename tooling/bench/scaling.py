"""Scaling: the validate stage with 1 and 2 replicas on a pre-filled topic (target ≥ 1.7× on 2 cores),
and the download stage with 1 and 3 replicas against the slow issuers of the seed scenario.  Each
configuration drains its own batch of records on the same stack; the steady rate is taken while
every replica was working, so a replica joining late (a rebalance) does not count against it."""

from __future__ import annotations

from shared.topics import Stage
from tooling.bench import seed
from tooling.bench.harness import bench_settings, bench_stack
from tooling.bench.output import emit
from tooling.bench.prefill import prefill, run_alone
from tooling.bench.scenarios import scenario

SCENARIO = scenario("scaling")
TARGET = SCENARIO.bound("validate.2.speedup")


def _measure(count: int, stage: Stage, replica_counts: tuple[int, ...], name: str, offset: int,
             **overrides: object) -> list[tuple[int, dict[str, float]]]:
    out = []
    with bench_stack(bench_settings(name, offset, **overrides)) as b:
        for i, r in enumerate(replica_counts):
            placed = b.place(count, batch=f"scale{i}", skip=i * count)
            waiting = prefill(b, placed.rows, stage)
            out.append((r, run_alone(b, stage, waiting, replicas=r)))
        b.stages([])
    return out


def run(validate_count: int = 10_000, download_count: int = 3_000) -> None:
    rows = []
    val = _measure(validate_count, Stage.VALIDATE, (1, 2), "scaling-validate", 40)
    # Three replicas share each issuer's 10 connections (services/download/service.py
    # ConnectionShare: 3 each for 2 of the topic's 6 partitions), none refused.
    dl = _measure(download_count, Stage.DOWNLOAD, (1, 3), "scaling-download", 50,
                  sftp_server_latency_ms=seed.LATENCY_MS, sftp_server_max_connections=seed.MAX_CONNECTIONS,
                  sftp_max_connections=seed.MAX_CONNECTIONS, sftp_channels_per_connection=seed.CHANNELS)
    figures: dict[str, float] = {}
    for stage, results, target in (("validate", val, TARGET), ("download (slow issuers)", dl, None)):
        base = results[0][1].get("steady_docs_per_s") or results[0][1].get("docs_per_s", 0.0)
        for r, f in results:
            rate = f.get("steady_docs_per_s") or f.get("docs_per_s", 0.0)
            speedup = rate / base if base else 0.0
            verdict = "" if target is None or r == 1 else (
                f"≥ {target}×: " + ("met" if speedup >= target else "NOT met"))
            rows.append([stage, r, f"{int(f.get('docs', 0)):,}", f"{f.get('docs_per_s', 0):,.0f}", f"{rate:,.0f}",
                         f"{speedup:.2f}×", f"{f.get('cpu_per_1000', 0):.2f}", verdict])
            # "validate.2.speedup": 2 validate replicas against 1
            key = f"{stage.split(' ')[0]}.{r}"
            figures.update({f"{key}.docs_per_s": rate, f"{key}.speedup": speedup, f"{key}.docs": f.get("docs", 0.0),
                            f"{key}.cpu_per_1000": f.get("cpu_per_1000", 0.0)})
    emit("scaling", ["stage", "replicas", "messages", "docs/s (first→last)", "docs/s (all replicas working)",
                     "speed-up", "CPU s / 1,000", "target"], rows,
         f"validate: {validate_count:,} records per configuration, 4 partitions; download: {download_count:,} per "
         f"configuration, slow_sftp {seed.LATENCY_MS} ms/file, max {seed.MAX_CONNECTIONS} connections per region, "
         f"shared by the replicas, {seed.CHANNELS} channels per connection",
         measured=[SCENARIO.measured(figures, {"validate_count": validate_count, "download_count": download_count})])
