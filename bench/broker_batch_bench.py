"""What the durable local broker (Tansu, s3 storage on SeaweedFS) costs per produced batch.

Starts its own stack (broker on s3 storage + SeaweedFS, nothing else), then produces records
at a paced rate for 10 s once per linger value and reports the CPU the broker and the S3
server spent per record.  The s3 engine writes every batch as an object and updates the
partition's watermark with a conditional write, so its cost follows the number of batches:
at a stage's pace, a short linger makes about one batch per record.

    .venv/bin/python bench/broker_batch_bench.py [--rate 200] [--partitions 4] [--linger 5 50 100 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.record import Measurement, append_result
from tests.support.stacks import isolated_settings, isolated_stack
from tooling.bench.harness import cpu_seconds
from tooling.stack import LocalStack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=200, help="records per second")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=2000, help="record value bytes")
    ap.add_argument("--linger", type=int, nargs="+", default=[5, 50, 100, 200])
    args = ap.parse_args()

    settings = isolated_settings("broker-bench", 77, broker_storage="s3", log_level="WARNING")
    rows = []
    figures: dict[str, float] = {}
    with isolated_stack(settings):
        pids = {c.name: c.pid for c in LocalStack(settings).status().components if c.name in ("broker", "s3") and c.pid}
        admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
        admin.create_topics([NewTopic("bench.batches", args.partitions, 1)])["bench.batches"].result()
        for linger in args.linger:
            producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": linger,
                                 "enable.idempotence": False, "acks": "all"})
            before = {n: cpu_seconds(p) for n, p in pids.items()}
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < args.seconds:
                producer.produce("bench.batches", b"x" * args.size, key=str(n).encode())
                n += 1
                producer.poll(0)
                time.sleep(max(0.0, t0 + n / args.rate - time.monotonic()))
            producer.flush(60)
            spent = {name: cpu_seconds(p) - before[name] for name, p in pids.items()}
            per_record = 1000 * sum(spent.values()) / n
            rows.append(f"| {linger} | {n:,} | {spent['s3']:.2f} | {spent['broker']:.2f} | {per_record:.2f} |")
            figures.update({f"linger_{linger}.records": n, f"linger_{linger}.s3_cpu_s": spent["s3"],
                            f"linger_{linger}.broker_cpu_s": spent["broker"],
                            f"linger_{linger}.cpu_ms_per_record": per_record})
            print(rows[-1], flush=True)
    table = "\n".join([
        f"| producer linger.ms | records (paced {args.rate}/s, {args.partitions} partitions, {args.size} B) "
        "| S3 server CPU s | broker CPU s | CPU ms per record |",
        "|---|---|---|---|---|", *rows])
    print(table)
    summary = "CPU (S3 server + broker) per record: " + ", ".join(
        f"{figures[f'linger_{linger}.cpu_ms_per_record']:.2f} ms at linger {linger} ms" for linger in args.linger)
    params = {"rate": args.rate, "partitions": args.partitions, "seconds": args.seconds, "size": args.size,
              "linger": args.linger}
    append_result("broker batches (Tansu s3 storage)", " ".join(["bench/broker_batch_bench.py", *sys.argv[1:]]),
                  table, "broker on s3 storage (local SeaweedFS); its cost follows produced batches, not bytes",
                  measured=[Measurement("broker-batches", figures, summary, params)])


if __name__ == "__main__":
    main()
