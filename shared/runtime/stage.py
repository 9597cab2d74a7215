"""A stage, declared as data: its handler and hooks; what it reads and where its results and
failures go come from its topology (shared/topics.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.runtime.condition import ConditionHook
from shared.runtime.message import Emit, Message
from shared.topics import TOPOLOGY, Lane, Stage, StageTopology

Handler = Callable[[Message], Awaitable[Sequence[Emit] | None]]
BreakerKey = Callable[[Message], str | None]
# Called before a dead letter is produced: (message, reason, error message, details, failure time
# in ms).  Services record the rejection in their state store here; if it raises, the message is
# retried instead.  The failure time is what the dead letter's headers will carry
# (ff-last-failure-ms): recorded with the rejection, the registry and the report (which counts the
# dead letter at that time) time it alike.
DeadLetterHook = Callable[[Message, str, str, dict[str, Any], int], Awaitable[None]]


@dataclass
class StageSpec:
    """One stage as its service builds it: the topology's stage (shared/topics.py) with its code.

    The handler knows nothing of topics, retries or dead letters: it returns the messages to
    emit, or raises :class:`PermanentError` / :class:`TransientError`.
    """

    stage: Stage
    handler: Handler
    # Maps a message to the downstream it needs (e.g. ``sftp:north``), so an open breaker for
    # that downstream defers the message instead of calling the handler.  Failures whose
    # downstream is not per-message (S3, PostgreSQL) pause the whole stage instead.
    breaker_key: BreakerKey | None = None
    # Prefixes of the downstreams that are a message's own (what ``breaker_key`` returns): their
    # open breaker defers those messages.  Any other downstream's open breaker pauses the stage.
    # Default: the stage's topology (shared/topics.py).
    per_message_downstreams: tuple[str, ...] | None = None
    max_in_flight: int | None = None  # default: Settings.max_in_flight
    # Spreads the handler slots over keys (the download stage: its region), so a long run of one
    # key's records does not keep the others' downstreams idle: a slot that frees goes to the
    # waiting key with the fewest in flight, and with every slot taken the replica reads on, past
    # at most ``look_ahead`` waiting messages, to find other keys' records
    # (shared/runtime/fairness.py).  Those wait in memory with their offsets uncommitted: a crash
    # redelivers them.
    fair_key: BreakerKey | None = None
    look_ahead: int = 0
    # What the stage opens and closes (its pool, its clients, an HTTP API) are parts of its service
    # host (shared/runtime/host.py), started before the runner and stopped after it.
    on_dead_letter: DeadLetterHook | None = None
    # Called when the replica halts, pauses or resumes, and periodically while it stays so
    # (shared/runtime/condition.py): services publish it where the job API can read it.
    on_condition: ConditionHook | None = None
    # Ready-check of the stage's own dependencies (for /readyz).
    ready_check: Callable[[], Awaitable[bool]] | None = None
    # Told, on the event loop, the partitions this replica holds after each change of its
    # assignment (all its topics; the priority lane's included): the download stage sizes its
    # share of the issuers' connections by it.
    on_assignment: Callable[[frozenset[tuple[str, int]]], None] | None = None
    group_id: str | None = None  # default: fiscalflow-<stage>
    # Prefix of every topic this stage reads and writes ("" in production).  Tests run many
    # isolated pipelines on one broker with it.
    topic_namespace: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def topology(self) -> StageTopology:
        return TOPOLOGY[self.stage]

    @property
    def own_downstreams(self) -> tuple[str, ...]:
        """The breaker-key prefixes whose open breaker defers a message instead of pausing the stage."""
        own = self.per_message_downstreams
        return self.topology.per_message_downstreams if own is None else own

    @property
    def consumer_group(self) -> str:
        """The group of the normal and retry lanes."""
        return self.group_id or self.topology.group

    @property
    def priority_group(self) -> str:
        """The priority lane's group: it has a consumer of its own (its own fetch queue)."""
        return self.topology.lane_group(Lane.PRIORITY, self.consumer_group)

    def subscriptions(self) -> dict[str, list[str]]:
        """Consumer group -> the topics the runner subscribes it to (what lag metrics and KEDA watch)."""
        return self.topology.subscriptions(self.consumer_group, self.topic_namespace)

    def ns(self, topic: str) -> str:
        return f"{self.topic_namespace}.{topic}" if self.topic_namespace else topic

    @property
    def priority_topic(self) -> str:
        return self.ns(self.topology.topic(Lane.PRIORITY))

    @property
    def normal_topic(self) -> str:
        return self.ns(self.topology.topic(Lane.NORMAL))

    @property
    def retry_topic(self) -> str:
        return self.ns(self.topology.topic(Lane.RETRY))

    @property
    def dlq_topic(self) -> str:
        dead_letters = self.topology.dead_letters
        if dead_letters is None:
            raise ValueError(f"the {self.stage} stage writes no dead letters")
        return self.ns(dead_letters)

    def next_topic(self, priority: bool) -> str:
        """Where a result goes: the next stage's lane, priority kept."""
        nxt = self.topology.next
        if nxt is None:
            raise ValueError(f"the {self.stage} stage is the last: its outputs need a topic")
        return self.ns(TOPOLOGY[nxt].topic(Lane.PRIORITY if priority else Lane.NORMAL))
