"""What one report write costs ClickHouse (embedded chDB), by batch size: the report service's
``ClickHouseSink.write`` on a table that already holds records.

Fills the tables with ``--prefill`` archived records (in writes of 2,000), then writes ``--events``
new ones in batches of each ``--batch`` size, pacing the writes as events arriving at ``--rate``
per second would (the sink idles between two writes, as the service does while it gathers a
batch), and reports the process's CPU (every chDB thread, merges included) per event and per
write.  Each write checks which documents the tables hold and inserts into archived (its
materialised views fill the summing tables) and record_outcomes: a cost per write that does not
depend on its size, which ``report_flush_s`` decides under load (decision 0031).

    .venv/bin/python bench/report_sink_bench.py [--prefill 50000] [--events 20000] [--batch 250 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import Measurement, append_result
from services.report.events import Archived
from services.report.sink import ClickHouseSink, connect, create_schema

DAYS = 30  # the events' Fecha spread over a month, as the generated invoices' are over days


def _event(n: int) -> Archived:
    at = dt.datetime.now(dt.UTC)
    return Archived(record_id=f"r{n}", uuid=str(uuid.uuid4()).upper(), issuer_rfc=f"ISS{n % 50:03d}0101AB1",
                    receiver_rfc="XAXX010101000", day=dt.date(2026, 1, 1) + dt.timedelta(days=n % DAYS),
                    fecha="2026-01-01T10:00:00", tipo="I", moneda="MXN", tipo_cambio=Decimal(1),
                    total=Decimal("116.00"), total_mxn=Decimal("116.00"), job_id="bench", s3_key=f"k{n}",
                    archived_at=at, version=int(at.timestamp() * 1000), lines=None, lines_in_archive=True,
                    region="north")


def run(batch: int, prefill: int, events: int, rate: float) -> tuple[float, float]:
    """(µs of CPU per event, ms per write) for ``events`` written ``batch`` at a time."""
    tmp = tempfile.mkdtemp(prefix="fiscalflow-sink-bench-")
    try:
        sink = ClickHouseSink(connect(f"chdb://{tmp}"))
        create_schema(sink.client)
        n = 0
        while n < prefill:
            sink.write([_event(i) for i in range(n, n + 2000)])
            n += 2000
        time.sleep(3)  # the prefill's merges settle before the measure
        start = time.process_time()  # every thread of the process: chDB's own included
        written = 0
        while written < events:
            sink.write([_event(i) for i in range(n + written, n + written + batch)])
            written += batch
            time.sleep(batch / rate * 0.3)  # a share of the gathering time: the sink idles, merges run
        time.sleep(2)  # the last writes' merges
        spent = time.process_time() - start
        return 1e6 * spent / written, 1e3 * spent / (written / batch)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefill", type=int, default=50_000, help="archived records already in the tables")
    ap.add_argument("--events", type=int, default=20_000, help="events written per batch size")
    ap.add_argument("--batch", type=int, nargs="+", default=[250, 1000])
    ap.add_argument("--rate", type=float, default=500, help="events per second the pacing assumes")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    rows, figures = [], {}
    for batch in args.batch:
        per_event_us, per_write_ms = run(batch, args.prefill, args.events, args.rate)
        figures[f"cpu_us_per_event_batch_{batch}"] = round(per_event_us, 1)
        rows.append(f"| {batch:,} | {batch / args.rate:.1f} s | {per_event_us:.0f} | {per_write_ms:.1f} |")
        print(rows[-1], flush=True)
    table = "\n".join(["| events per write | gathering time at the rate | CPU µs per event | CPU ms per write |",
                       "|---|---|---|---|", *rows])
    print(table)
    if not args.no_record:
        append_result(f"report sink writes, {args.prefill:,} archived records in chDB",
                      ".venv/bin/python bench/report_sink_bench.py " + " ".join(sys.argv[1:]), table,
                      f"{args.events:,} events per batch size at {args.rate:.0f} events/s",
                      measured=[Measurement("report-sink", figures, "; ".join(rows),
                                            {"prefill": args.prefill, "events": args.events, "rate": args.rate})])


if __name__ == "__main__":
    main()
