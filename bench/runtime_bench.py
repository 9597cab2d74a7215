"""Runtime throughput through the local broker: a no-op stage, and 200 concurrent 10 ms I/O handlers.

End to end = consume, handle, produce the output, wait for its acknowledgement, commit.
Runs against the broker in FISCALFLOW_BOOTSTRAP_SERVERS (e.g. one started by `fiscalflow stack up`).

    .venv/bin/python bench/runtime_bench.py [--messages N] [--pad BYTES] [--in-flight N]

``--pad 5000`` makes the messages document-sized (a generated invoice is ~5.3 KB): the broker path
the validate stage sees, without the validator.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Producer

from bench.record import Measurement, append_result
from shared.runtime import Emit, Message, StageSpec
from shared.runtime.admin import ensure_topics
from shared.runtime.runner import StageRunner
from shared.runtime.tracing import setup_tracing
from shared.settings import Settings
from shared.topics import Stage, TopicSpec


async def run_case(settings: Settings, n: int, sleep_s: float, in_flight: int, partitions: int,
                   pad: int = 200) -> dict[str, float]:
    ns = "b" + uuid.uuid4().hex[:8]
    topics = ["fiscal.validate", "fiscal.validate.priority", "fiscal.validate.retry", "fiscal.dlq", "out"]
    ensure_topics(settings, [TopicSpec(f"{ns}.{t}", partitions) for t in topics])
    p = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5, "batch.num.messages": 5000})
    body = b'{"id":"x","pad":"' + b"x" * pad + b'"}'
    for i in range(n):
        while True:
            try:
                p.produce(f"{ns}.fiscal.validate", body, key=f"r{i}".encode())
                break
            except BufferError:
                p.poll(0.01)
    p.flush()
    done = 0
    first = 0.0
    finished = asyncio.Event()

    async def handle(msg: Message) -> list[Emit]:
        nonlocal done, first
        if not first:
            first = time.perf_counter()
        if sleep_s:
            await asyncio.sleep(sleep_s)
        return [Emit(value=msg.value, topic="out")]

    spec = StageSpec(stage=Stage.VALIDATE, handler=handle, topic_namespace=ns, group_id=f"{ns}-g",
                     max_in_flight=in_flight)
    runner = StageRunner(spec, settings)

    # Count completions after the output was acknowledged: wrap the emit path.
    original = runner.processor.emit

    async def counted(msg: Message, emits: Sequence[Emit]) -> None:
        nonlocal done
        await original(msg, emits)
        done += 1
        if done >= n:
            finished.set()

    runner.processor.emit = counted  # type: ignore[method-assign]
    cpu0 = time.process_time()
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(finished.wait(), timeout=600)
    elapsed = time.perf_counter() - first
    cpu = time.process_time() - cpu0
    runner.stop()
    await task
    return {"messages": n, "seconds": round(elapsed, 2), "msg_per_s": round(n / elapsed),
            "cpu_s_per_1000": round(cpu / n * 1000, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--io-messages", type=int, default=20_000)
    ap.add_argument("--pad", type=int, default=200, help="message padding, bytes")
    ap.add_argument("--in-flight", type=int, default=1000, help="the no-op case's max in flight")
    args = ap.parse_args()
    settings = Settings(fetch_wait_max_ms=20)
    # As every service does (services/registry.py): the process's tracer provider, so the
    # per-message span costs what it costs in a stage.
    setup_tracing("fiscalflow-bench-runtime", settings.otlp_endpoint)
    noop = asyncio.run(run_case(settings, args.messages, 0.0, args.in_flight, 4, args.pad))
    io = asyncio.run(run_case(settings, args.io_messages, 0.010, 200, 4, args.pad))
    ideal = 200 / 0.010
    lines = [
        "| case | messages | seconds | msg/s | CPU s / 1,000 msgs |",
        "|---|---|---|---|---|",
        f"| no-op stage (in-flight {args.in_flight}) | {noop['messages']} | {noop['seconds']} | {noop['msg_per_s']} "
        f"| {noop['cpu_s_per_1000']} |",
        f"| 200 concurrent 10 ms I/O handlers (ideal {ideal:.0f}/s) | {io['messages']} | {io['seconds']} "
        f"| {io['msg_per_s']} | {io['cpu_s_per_1000']} |",
    ]
    print("\n".join(lines))
    figures = {f"{case}.{k}": v for case, r in (("noop", noop), ("io", io)) for k, v in r.items()}
    summary = (f"no-op stage {noop['msg_per_s']:,.0f} msg/s, {noop['cpu_s_per_1000']} CPU-s per 1,000; 200 concurrent "
               f"10 ms handlers {io['msg_per_s']:,.0f} msg/s, {io['cpu_s_per_1000']} CPU-s per 1,000 "
               f"(~{args.pad + 30}-byte messages)")
    params = {"messages": args.messages, "io_messages": args.io_messages, "pad": args.pad, "in_flight": args.in_flight}
    append_result("runtime", " ".join(["python", *sys.argv]), "\n".join(lines),
                  note="End to end through the local Tansu broker (memory engine): consume, handler, produce, "
                  f"ack, commit; 4 partitions, ~{args.pad + 30}-byte messages, one process.",
                  measured=[Measurement("runtime", figures, summary, params)])


if __name__ == "__main__":
    os.environ.setdefault("FISCALFLOW_LOG_LEVEL", "WARNING")
    main()
