"""Replay dead letters: back to the stage they failed in, or parked once replayed too often.

Selection happens over the whole dead-letter topic before any filter: only a record's latest
dead letter is replayed, so a record that failed again after an earlier replay (or elsewhere)
is never sent back from an older failure.  Then, per dead letter:

* its record is archived → skipped (it is done; replaying would only be counted again);
* it was replayed before (the ledger, keyed by the letter's identity, so a redelivered copy of
  a dead letter replayed before is skipped too) → skipped;
* its replay count + 1 exceeds the limit → sent to the parking topic with reason REPLAY_LIMIT;
* otherwise → sent to its origin topic (normal or priority lane), or to ``--to STAGE``'s input,
  with the same key and value, its domain headers, and ``ff-replay-count`` + 1.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from confluent_kafka import Message as KafkaMessage

from shared.dlq.filters import DeadLetterFilter
from shared.dlq.ledger import LedgerEntry, ReplayLedger
from shared.dlq.model import DeadLetter
from shared.domain.reasons import ReasonCode
from shared.domain.records import RecordStatus
from shared.runtime import headers as H
from shared.runtime.kafka import AsyncProducer
from shared.topics import PARKING, Stage, input_topic, priority_topic


class Outcome(StrEnum):
    REPLAYED = "replayed"
    PARKED = "parked"
    SKIPPED_ARCHIVED = "skipped_archived"
    SKIPPED_ALREADY_REPLAYED = "skipped_already_replayed"
    SKIPPED_SUPERSEDED = "skipped_superseded"  # a later dead letter of the same record exists
    SKIPPED_NO_ORIGIN = "skipped_no_origin"  # no known stage topic to send it back to
    FAILED = "failed"  # the broker did not take it; a later run retries


@dataclass(frozen=True)
class ReplayOptions:
    to_stage: Stage | None = None
    max_replays: int = 3
    rate: float | None = None  # messages per second; None: as fast as the broker takes them
    dry_run: bool = False
    namespace: str = ""  # topic prefix, as StageSpec.topic_namespace (isolated pipelines in tests)

    def ns(self, topic: str) -> str:
        return f"{self.namespace}.{topic}" if self.namespace else topic


@dataclass(frozen=True)
class PlannedReplay:
    letter: DeadLetter
    outcome: Outcome  # what will happen (REPLAYED/PARKED) or why not
    target_topic: str = ""
    replay_count: int = 0  # the ff-replay-count the sent message carries
    current_status: str | None = None

    def to_json_dict(self) -> dict[str, object]:
        return {"record_id": self.letter.record_id, "dlq_position": self.letter.position,
                "dlq_topic": self.letter.dlq_topic, "outcome": self.outcome.value, "target_topic": self.target_topic,
                "replay_count": self.replay_count, "current_status": self.current_status,
                "stage": self.letter.stage, "reason": self.letter.reason}


@dataclass
class ReplaySummary:
    outcomes: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    items: list[PlannedReplay] = field(default_factory=list)
    elapsed_s: float = 0.0
    dry_run: bool = False

    def add(self, item: PlannedReplay) -> None:
        self.outcomes[item.outcome] += 1
        self.items.append(item)

    def to_json_dict(self) -> dict[str, object]:
        return {"dry_run": self.dry_run, "elapsed_s": round(self.elapsed_s, 3),
                **{o.value: n for o, n in self.outcomes.items()}}


def latest_per_record(letters: Iterable[DeadLetter], flt: DeadLetterFilter) -> tuple[list[DeadLetter],
                                                                                      list[DeadLetter]]:
    """(the selected letters that are their record's latest, the selected ones superseded).

    Every letter is looked at for "latest", the filter only decides which are selected; the
    values of letters not selected are dropped as they stream by (a DLQ can hold large documents).
    """
    latest: dict[str, DeadLetter] = {}
    selected: list[DeadLetter] = []
    for dl in letters:
        keep = flt.matches(dl)
        if keep:
            selected.append(dl)
        prev = latest.get(dl.record_id)
        if prev is None or dl.supersedes(prev):
            latest[dl.record_id] = dl if keep else dl.model_copy(update={"value": b"", "headers": {}})
    current = [dl for dl in selected if latest[dl.record_id] is dl]
    superseded = [dl for dl in selected if latest[dl.record_id] is not dl]
    if flt.limit is not None:
        current = current[: flt.limit]
    return current, superseded


def origin_lane(origin_topic: str, namespace: str = "") -> tuple[Stage, bool] | None:
    """The stage whose input topic ``origin_topic`` is, and whether it is the priority lane."""
    name = origin_topic
    if namespace:
        if not name.startswith(namespace + "."):
            return None
        name = name[len(namespace) + 1:]
    for stage in Stage:
        if name == input_topic(stage):
            return stage, False
        if name == priority_topic(stage):
            return stage, True
    return None


def target_topic(dl: DeadLetter, opts: ReplayOptions) -> str | None:
    lane = origin_lane(dl.origin_topic, opts.namespace)
    if opts.to_stage is None:
        return dl.origin_topic if lane is not None else None
    # Another stage, same lane: a priority job's record stays ahead of the backlog.
    priority = lane is not None and lane[1]
    return opts.ns(priority_topic(opts.to_stage) if priority else input_topic(opts.to_stage))


def replay_headers(dl: DeadLetter, count: int) -> dict[str, str]:
    """Domain headers travel on (job id, trace context, anything not ours); the runtime's failure
    headers describe the failure just handled, and the target topic decides the lane."""
    out = {k: v for k, v in dl.headers.items() if not k.startswith(H.PREFIX)}
    if dl.job_id:
        out[H.JOB_ID] = dl.job_id
    for k in (H.RULES, H.MAX_ATTEMPTS):  # the job's profile stays the record's
        if k in dl.headers:
            out[k] = dl.headers[k]
    out[H.REPLAY_COUNT] = str(count)
    return out


def parking_headers(dl: DeadLetter, max_replays: int) -> dict[str, str]:
    """The dead letter's own headers (where and why it failed), reason REPLAY_LIMIT, and the last
    failure kept in the details."""
    out = dict(dl.headers)
    out[H.REASON] = ReasonCode.REPLAY_LIMIT.value
    out[H.ERROR_MESSAGE] = (f"replayed {dl.replay_count} times (limit {max_replays}); last failure in "
                            f"{dl.stage or '?'}: {dl.reason}: {dl.error}")[:2000]
    out[H.DETAILS] = json.dumps({
        "replay_limit": max_replays, "replay_count": dl.replay_count,
        "dead_letter": {"topic": dl.dlq_topic, "partition": dl.dlq_partition, "offset": dl.dlq_offset},
        "last_reason": dl.reason, "last_error": dl.error, "last_details": dl.details,
    }, default=str)[:50_000]
    return out


async def plan(letters: list[DeadLetter], superseded: list[DeadLetter], ledger: ReplayLedger,
               opts: ReplayOptions) -> list[PlannedReplay]:
    statuses = await ledger.statuses(sorted({d.record_id for d in letters}))
    done = await ledger.already_replayed(letters)
    out = [PlannedReplay(d, Outcome.SKIPPED_SUPERSEDED) for d in superseded]
    for d in letters:
        status = statuses.get(d.record_id)
        count = d.replay_count + 1
        if status == RecordStatus.ARCHIVED:
            out.append(PlannedReplay(d, Outcome.SKIPPED_ARCHIVED, current_status=status))
        elif d.letter_id in done:
            out.append(PlannedReplay(d, Outcome.SKIPPED_ALREADY_REPLAYED, current_status=status))
        elif count > opts.max_replays:
            out.append(PlannedReplay(d, Outcome.PARKED, opts.ns(PARKING), d.replay_count, status))
        else:
            target = target_topic(d, opts)
            if target is None:
                out.append(PlannedReplay(d, Outcome.SKIPPED_NO_ORIGIN, current_status=status))
            else:
                out.append(PlannedReplay(d, Outcome.REPLAYED, target, count, status))
    return out


class Pacer:
    """At most ``rate`` sends per second, evenly spaced (no bursts into a recovering stage)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(now, self._next) + self.interval


async def execute(items: list[PlannedReplay], ledger: ReplayLedger, producer: AsyncProducer | None,
                  opts: ReplayOptions,
                  on_item: Callable[[PlannedReplay], None] | None = None) -> ReplaySummary:
    """Send what ``plan`` decided, in chunks: claim in the ledger, send, confirm and audit."""
    started = time.monotonic()
    summary = ReplaySummary(dry_run=opts.dry_run)

    sends = (Outcome.REPLAYED, Outcome.PARKED)
    to_send = [i for i in items if i.outcome in sends]
    for item in items:
        if item.outcome not in sends or opts.dry_run:
            summary.add(item)
            if on_item is not None:
                on_item(item)
    if opts.dry_run or not to_send:
        summary.elapsed_s = time.monotonic() - started
        return summary
    if producer is None:
        raise ValueError("a replay that sends needs a producer")
    # At a low rate a chunk is about a second of sends: the ledger stays close to what was sent.
    chunk_size = max(1, min(500, int(opts.rate))) if opts.rate else 500
    pacer = Pacer(opts.rate)
    for start in range(0, len(to_send), chunk_size):
        chunk = to_send[start:start + chunk_size]
        entries = {i.letter.letter_id: LedgerEntry(i.letter, i.outcome.value, i.target_topic, i.replay_count,
                                                   i.current_status) for i in chunk}
        claimed = await ledger.claim(list(entries.values()))
        sending: list[tuple[PlannedReplay, asyncio.Future[KafkaMessage]]] = []
        for item in chunk:
            if item.letter.letter_id not in claimed:  # another run replayed it meanwhile
                skipped = PlannedReplay(item.letter, Outcome.SKIPPED_ALREADY_REPLAYED,
                                        current_status=item.current_status)
                summary.add(skipped)
                if on_item is not None:
                    on_item(skipped)
                continue
            await pacer.wait()
            d = item.letter
            hdrs = (replay_headers(d, item.replay_count) if item.outcome is Outcome.REPLAYED
                    else parking_headers(d, opts.max_replays))
            sending.append((item, producer.send(item.target_topic, d.value, d.key, H.to_list(hdrs))))
            if on_item is not None:  # progress moves as messages go out; the summary counts deliveries
                on_item(item)
        results = await asyncio.gather(*(f for _, f in sending), return_exceptions=True)
        ok = [i for (i, _), r in zip(sending, results, strict=True) if not isinstance(r, BaseException)]
        failed = [i for (i, _), r in zip(sending, results, strict=True) if isinstance(r, BaseException)]
        await ledger.confirm([entries[i.letter.letter_id] for i in ok])
        await ledger.release([entries[i.letter.letter_id] for i in failed])
        for i in ok:
            summary.add(i)
        for i in failed:
            summary.add(PlannedReplay(i.letter, Outcome.FAILED, i.target_topic, i.replay_count, i.current_status))
    summary.elapsed_s = time.monotonic() - started
    return summary
