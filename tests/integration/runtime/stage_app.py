"""A test stage on the real runtime, run as its own process so tests can SIGKILL/SIGTERM it.

Behaviour is driven by each message's JSON value, so one handler covers every scenario:
``{"id": ..., "sleep_ms": 10, "permanent": true, "transient": 2}`` — sleep, fail permanently,
or fail transiently on the first N attempts (or while the file ``fail_while`` names exists);
``"emit_bytes": N`` pads its output to N bytes.  Every handled record is written to an idempotent
PostgreSQL sink (one row per record; ``deliveries`` counts redeliveries) and emitted to ``<ns>.out``;
every dead letter's rejection is recorded by the ``on_dead_letter`` hook in ``runtime_rejections``.

    python tests/integration/runtime/stage_app.py NAMESPACE [--max-in-flight N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import asyncpg
import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

from shared.db.conditions import condition_hook
from shared.db.migrate import connect_pool
from shared.logs import setup_logging
from shared.runtime import Emit, Message, PermanentError, StageSpec, TransientError
from shared.runtime.host import ServiceHost
from shared.runtime.service import run_stage
from shared.runtime.tracing import setup_tracing
from shared.settings import Settings
from shared.topics import Stage

SINK_DDL = """
CREATE TABLE IF NOT EXISTS runtime_sink (
    ns text NOT NULL, record_id text NOT NULL, deliveries int NOT NULL DEFAULT 1,
    handled_at timestamptz NOT NULL DEFAULT clock_timestamp(), seq bigserial,
    PRIMARY KEY (ns, record_id));
CREATE TABLE IF NOT EXISTS runtime_rejections (
    ns text NOT NULL, record_id text NOT NULL, reason text NOT NULL, message text NOT NULL,
    details jsonb, PRIMARY KEY (ns, record_id, reason))
"""


def build(ns: str, settings: Settings, pool: asyncpg.Pool, max_in_flight: int | None) -> StageSpec:
    async def handle(msg: Message) -> Sequence[Emit]:
        body = orjson.loads(msg.value)
        if body.get("sleep_ms"):
            await asyncio.sleep(body["sleep_ms"] / 1000)
        if body.get("permanent"):
            raise PermanentError("TEST_PERMANENT", f"record {body['id']} is poison", {"why": "test"})
        # A downstream that is down until the test removes the file.
        if body.get("fail_while") and await asyncio.to_thread(os.path.exists, body["fail_while"]):
            raise TransientError(f"{body['fail_while']} exists", downstream=body.get("downstream", "testsink"))
        if msg.attempt < int(body.get("transient", 0)):
            raise TransientError(f"attempt {msg.attempt} fails", downstream=body.get("downstream", "testsink"))
        await pool.execute(
            "INSERT INTO runtime_sink (ns, record_id) VALUES ($1, $2) "
            "ON CONFLICT (ns, record_id) DO UPDATE SET deliveries = runtime_sink.deliveries + 1",
            ns, msg.record_id,
        )
        pad = int(body.get("emit_bytes", 0)) - len(msg.value)
        return [Emit(value=msg.value + b" " * max(0, pad), topic="out")]

    async def record_rejection(msg: Message, reason: str, message: str, details: dict[str, object],
                               failed_at_ms: int) -> None:
        await pool.execute("INSERT INTO runtime_rejections VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                           ns, msg.record_id, reason, message, orjson.dumps(details).decode())

    return StageSpec(stage=Stage.VALIDATE, handler=handle, topic_namespace=ns, group_id=f"{ns}-group",
                     max_in_flight=max_in_flight, on_condition=condition_hook(lambda: pool),
                     on_dead_letter=record_rejection)


async def amain(ns: str, max_in_flight: int | None) -> None:
    settings = Settings()
    pool = await connect_pool(settings.pg_dsn.get_secret_value(), max_size=8)  # migrated: stage_conditions
    await pool.execute(SINK_DDL)
    try:
        await run_stage(build(ns, settings, pool, max_in_flight), ServiceHost(settings, Stage.VALIDATE))
    finally:
        await pool.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("namespace")
    ap.add_argument("--max-in-flight", type=int, default=None)
    args = ap.parse_args()
    setup_logging(os.environ.get("FISCALFLOW_LOG_LEVEL", "INFO"), service=f"test-{args.namespace}")
    setup_tracing("fiscalflow-test-stage")
    asyncio.run(amain(args.namespace, args.max_in_flight))
