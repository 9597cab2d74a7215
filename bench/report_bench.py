"""Report query latency with 1,000,000 archived records in ClickHouse (chDB, embedded).

    .venv/bin/python bench/report_bench.py [--records 1000000] [--runs 300] [--dense] [--no-record]

Loads the records with INSERT ... SELECT (so the materialised views fill the summing tables as
the service's inserts do): 365 days, 50 issuers, tipos I/E/P, monedas MXN/USD/EUR, plus 5 %
rejected outcomes.  By default the numbers cycle together, so a day holds 90 of the 450
(issuer, tipo, moneda) keys (10 issuers); ``--dense`` spreads them so every day holds all 450,
the worst case for the summing tables (5x the rows per day).  Then times the service's own query
functions (services/report/queries.py) through its ClickHouse thread, p50/p99, and the same
answers computed from the base table with FINAL, to show what the summing tables buy.  The
machine's load average is part of the note: on shared cores it moves p99 more than any change.
The process's memory (/proc/self/status) is read after the load (once jemalloc has handed the
bulk insert's pages back) and after the report queries: VmRSS, split into private (RssAnon) and
file-backed pages (RssFile: chDB's library), and VmHWM, the peak so far (decision 0023).
Appends to the raw run log (.local/bench/).  Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.record import append_result
from services.report import queries
from services.report.sink import connect, create_schema

CHUNK = 100_000
SETTLE_S = 6.0  # jemalloc returns freed pages after its dirty_decay_ms (5 s in chDB): RSS is read after it


def memory() -> dict[str, float]:
    """This process's memory now, MB: rss (VmRSS) = anon (RssAnon) + file (RssFile) + shmem; peak (VmHWM)."""
    keys = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "peak"}
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in keys:
                out[keys[name]] = int(value.split()[0]) / 1024
    return out


def _memory_text(m: dict[str, float]) -> str:
    return f"RSS {m['rss']:.0f} MB ({m['anon']:.0f} private + {m['file']:.0f} file-backed), peak {m['peak']:.0f} MB"


_LOAD_ARCHIVED = """
INSERT INTO archived SELECT
    concat('r', toString(number)) AS record_id,
    upper(toString(generateUUIDv4(number))) AS uuid,
    concat('ISS', leftPad(toString(number % 50), 3, '0'), '0101AB1') AS issuer_rfc,
    'XAXX010101000', toDate('2025-01-01') + (number % 365) AS day, concat(toString(day), 'T10:00:00'),
    ['I', 'E', 'P'][number % 3 + 1] AS tipo, ['MXN', 'USD', 'EUR'][intDiv(number, 3) % 3 + 1] AS moneda,
    if(moneda = 'MXN', toDecimal64(1, 6), toDecimal64(17.5, 6)) AS tipo_cambio,
    toDecimal64((number % 100000) / 100, 6) AS total,
    CAST(total AS Decimal(38, 12)) * tipo_cambio AS total_mxn,
    '', '', now64(3, 'UTC') - toIntervalSecond(number % 172800) AS archived_at, number AS version,
    ['north', 'central', 'south'][cityHash64(issuer_rfc) % 3 + 1] AS region  -- an issuer's server is in one region
FROM numbers({start}, {count})
"""
# --dense: day, issuer, tipo and moneda from different digits of the number (365 x 50 x 3 x 3).
_DENSE = {"number % 50": "intDiv(number, 365) % 50", "[number % 3 + 1]": "[intDiv(number, 18250) % 3 + 1]",
          "[intDiv(number, 3) % 3 + 1]": "[intDiv(number, 54750) % 3 + 1]"}
_LOAD_OUTCOMES = """
INSERT INTO record_outcomes SELECT concat('r', toString(number)),
    if(number % 20 = 0, 'rejected', 'archived'), if(number % 20 = 0, 'CHECKSUM_MISMATCH', ''), '', 1, number,
    ['north', 'central', 'south'][number % 3 + 1]
FROM numbers({start}, {count})
"""
_UNALIGNED = (dt.date(2025, 1, 2), dt.date(2025, 12, 30))  # 364 days, no whole month at either end
_DAILY_FINAL = ("SELECT issuer_rfc, tipo, moneda, count(), sum(total), sum(total_mxn) FROM archived FINAL"
                " WHERE day = '2025-06-15' GROUP BY ALL")
_ISSUERS_FINAL = ("SELECT issuer_rfc, tipo, moneda, count(), sum(total), sum(total_mxn) FROM archived FINAL"
                  " WHERE day BETWEEN '2025-01-01' AND '2025-12-31' GROUP BY ALL")
_SUMMARY_FINAL = "SELECT outcome, reason, count() FROM record_outcomes FINAL GROUP BY ALL"


def _timed(fn: Callable[[], Any], runs: int, pool: ThreadPoolExecutor) -> tuple[float, float]:
    """p50, p99 in ms, each call through the one ClickHouse thread (as the API does)."""
    async def measure() -> list[float]:
        loop = asyncio.get_running_loop()
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            await loop.run_in_executor(pool, fn)
            out.append((time.perf_counter() - t0) * 1000)
        return out

    samples = sorted(asyncio.run(measure()))
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def _check_exact(client: Any, start: dt.date, end: dt.date) -> None:
    exact = {(r[0], r[1], r[2]): (int(r[3]), r[4], r[5]) for r in client.query(
        "SELECT issuer_rfc, tipo, moneda, count(), sum(total), sum(total_mxn) FROM archived FINAL"
        " WHERE day BETWEEN %(a)s AND %(b)s GROUP BY ALL", parameters={"a": start, "b": end}).result_rows}
    fast = {(i["rfc"], g["tipo"], g["moneda"]): (g["count"], Decimal(g["total"]), Decimal(g["total_mxn"]))
            for i in queries.issuers(client, start, end)["issuers"] for g in i["groups"]}
    assert fast == exact, f"summing tables disagree with archived FINAL for {start}..{end}"
    if start == end:  # and the daily report's two views of the day
        groups: dict[tuple[str, str], list[Any]] = {}
        by_issuer: dict[str, list[Any]] = {}
        for (rfc, tipo, moneda), (n, total, total_mxn) in exact.items():
            g = groups.setdefault((tipo, moneda), [0, Decimal(0), Decimal(0)])
            i = by_issuer.setdefault(rfc, [0, Decimal(0)])
            g[0], g[1], g[2], i[0], i[1] = g[0] + n, g[1] + total, g[2] + total_mxn, i[0] + n, i[1] + total_mxn
        day = queries.daily(client, start)
        assert {(g["tipo"], g["moneda"]): [g["count"], Decimal(g["total"]), Decimal(g["total_mxn"])]
                for g in day["groups"]} == groups, f"daily groups disagree with archived FINAL for {start}"
        assert [(i["rfc"], i["count"], Decimal(i["total_mxn"])) for i in day["issuers"]] == sorted(
            ((rfc, n, mxn) for rfc, (n, mxn) in by_issuer.items()), key=lambda r: (-r[2], r[0])), \
            f"daily issuers disagree with archived FINAL for {start}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--dense", action="store_true", help="every (issuer, tipo, moneda) every day")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    load_archived = _LOAD_ARCHIVED
    for sparse, dense in _DENSE.items() if args.dense else ():
        load_archived = load_archived.replace(sparse, dense)
    tmp = Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        client = connect(f"chdb://{tmp}/ch")
        create_schema(client)
        t0 = time.perf_counter()
        for start in range(0, args.records, CHUNK):
            count = min(CHUNK, args.records - start)
            client.command(load_archived.format(start=start, count=count))
            client.command(_LOAD_OUTCOMES.format(start=start, count=count))
        load_s = time.perf_counter() - t0
        # Measure the steady state, not the merge storm right after a bulk load: the service
        # inserts continuously and background merges keep up (waited for here, at most a minute).
        deadline = time.monotonic() + 60
        while client.query("SELECT count() FROM system.merges").result_rows[0][0] and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(SETTLE_S)
        mem_loaded = memory()
        print(f"memory after the load: {_memory_text(mem_loaded)}; load average {os.getloadavg()[0]:.2f}", flush=True)
        n = client.query("SELECT count() FROM archived").result_rows[0][0]
        keys = client.query("SELECT uniqExact(day, issuer_rfc, tipo, moneda) FROM archived").result_rows[0][0]
        summing = ", ".join(f"{t} {rows:,} rows in {parts} parts" for t, rows, parts in client.query(
            "SELECT table, sum(rows), count() FROM system.parts WHERE active AND database = currentDatabase()"
            " AND table LIKE '%totals' GROUP BY table ORDER BY table").result_rows)
        pool = ThreadPoolExecutor(1)
        day, first, last = dt.date(2025, 6, 15), dt.date(2025, 1, 1), dt.date(2025, 12, 31)
        # The summing tables must give the base table's exact answer, for ranges that cut months.
        for a, b in ((first, last), (dt.date(2025, 1, 15), dt.date(2025, 3, 10)), (day, day), _UNALIGNED,
                     (dt.date(2025, 2, 1), dt.date(2025, 2, 28)), (dt.date(2025, 3, 31), dt.date(2025, 5, 1)),
                     (first, first), (last, last), (dt.date(2024, 12, 1), dt.date(2025, 1, 1))):
            _check_exact(client, a, b)
        # (figure key, row label, query): the keys are the figures of the run's record
        cases: list[tuple[str, str, Callable[[], Any]]] = [
            ("daily", "daily (one day)", lambda: queries.daily(client, day)),
            ("summary", "summary (ClickHouse part)", lambda: queries.final_counts(client)),
            ("issuers_31d", "issuers, 31 days", lambda: queries.issuers(client, day, day + dt.timedelta(days=30))),
            ("issuers_365d", "issuers, 365 days", lambda: queries.issuers(client, first, last)),
            ("issuers_364d_unaligned", "issuers, 364 days, no whole month at the ends",
             lambda: queries.issuers(client, *_UNALIGNED)),
            ("trend_24h", "trend, 24 h", lambda: queries.trend(client, 24, dt.datetime.now(dt.UTC))),
            ("final_daily", "baseline: daily from archived FINAL", lambda: client.query(_DAILY_FINAL)),
            ("final_issuers_365d", "baseline: issuers 365 d from archived FINAL",
             lambda: client.query(_ISSUERS_FINAL)),
            ("final_summary", "baseline: summary from record_outcomes FINAL", lambda: client.query(_SUMMARY_FINAL)),
        ]
        rows = []
        figures: dict[str, float] = {"records": n, "keys": keys, "load_s": load_s}
        load_before = os.getloadavg()
        mem_queried: dict[str, float] = {}
        for key, name, fn in cases:
            if name.startswith("baseline") and not mem_queried:  # the service's queries have all run
                mem_queried = memory()
                print(f"memory after the report queries: {_memory_text(mem_queried)}; load average"
                      f" {os.getloadavg()[0]:.2f}", flush=True)
            fn()  # warm caches
            runs = args.runs if not name.startswith("baseline") else max(20, args.runs // 10)
            p50, p99 = _timed(fn, runs, pool)
            rows.append(f"| {name} | {runs} | {p50:.2f} | {p99:.2f} |")
            figures.update({f"{key}.p50_ms": p50, f"{key}.p99_ms": p99})
            print(rows[-1], flush=True)
        pool.shutdown()
        mem_queried = mem_queried or memory()
        table = "\n".join(["| query | runs | p50 ms | p99 ms |", "|---|---|---|---|", *rows])
        load_after = os.getloadavg()
        for stage, m in (("loaded", mem_loaded), ("queried", mem_queried)):
            figures.update({f"memory.{stage}.{k}_mb": v for k, v in m.items()})
        note = (f"{n:,} archived records (+5 % rejected outcomes) loaded in {load_s:.1f} s, "
                f"{'dense: ' if args.dense else ''}{keys:,} (day, issuer, tipo, moneda) keys; after merges "
                f"settled: {summing}; load average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in load_before)} "
                f"before the timings, {'/'.join(f'{x:.2f}' for x in load_after)} after; target p99 <= 20 ms "
                "for daily, summary, issuers. Summary's in-progress counts come from PostgreSQL (index on "
                "status) and are not in these numbers. Memory of this process after the load: "
                f"{_memory_text(mem_loaded)}; after the report queries (before the baselines): "
                f"{_memory_text(mem_queried)}; target RSS <= 200 MB.")
        print(note)
        if not args.no_record:
            from tooling.bench.scenarios import scenario

            append_result(f"report queries, {n:,} archived records in chDB",
                          f".venv/bin/python bench/report_bench.py --records {args.records} --runs {args.runs}"
                          + (" --dense" if args.dense else ""), table, note,
                          measured=[scenario("report-queries").measured(
                              figures, {"records": args.records, "runs": args.runs, "dense": args.dense})])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
