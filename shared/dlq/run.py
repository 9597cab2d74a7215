"""Reading and replaying the dead letters the same way wherever it is asked for: ``fiscalflow dlq``
(shared/dlq/cli.py) and the report service's console API (services/report/console.py)."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable

import asyncpg

from shared.dlq.ledger import ReplayLedger
from shared.dlq.model import DeadLetter, collapse_copies
from shared.dlq.reader import read_dead_letters
from shared.dlq.replay import PlannedReplay, ReplayOptions, ReplaySummary, execute, plan
from shared.runtime.kafka import AsyncProducer, producer_config
from shared.settings import Settings
from shared.topics import DLQ


def dlq_topic(namespace: str = "") -> str:
    return f"{namespace}.{DLQ}" if namespace else DLQ


def read_letters(settings: Settings, namespace: str, keep_values: bool,
                 limit: int | None = None) -> list[DeadLetter]:
    """Every dead letter (at most ``limit`` messages read), each once, in failure order (the
    broker's timestamp, then position).  Blocking: run it in a thread from async code.  Raises
    :class:`shared.dlq.reader.DeadLetterTopicMissing`."""
    letters = list(itertools.islice(read_dead_letters(settings, dlq_topic(namespace), keep_values=keep_values),
                                    limit))
    letters.sort(key=lambda d: (d.dlq_timestamp_ms, d.dlq_partition, d.dlq_offset))
    return collapse_copies(letters)


async def replay_letters(conn: asyncpg.Connection, settings: Settings, letters: list[DeadLetter],
                         superseded: list[DeadLetter], opts: ReplayOptions, actor: str,
                         on_plan: Callable[[list[PlannedReplay]], None] | None = None,
                         on_item: Callable[[PlannedReplay], None] | None = None) -> ReplaySummary:
    """Plan (the ledger decides what was replayed already) and, unless a dry run, send: the one
    replay of the CLI and the console.  ``letters`` carry their values (``keep_values=True``)."""
    ledger = ReplayLedger(conn, actor)
    items = await plan(letters, superseded, ledger, opts)
    if on_plan is not None:
        on_plan(items)
    producer = None
    if not opts.dry_run:
        producer = AsyncProducer(producer_config(settings, f"fiscalflow-dlq-replay-{socket.gethostname()}"))
    try:
        return await execute(items, ledger, producer, opts, on_item=on_item)
    finally:
        if producer is not None:
            await asyncio.get_running_loop().run_in_executor(None, producer.close)
