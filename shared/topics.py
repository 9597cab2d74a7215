"""The pipeline's topology, declared once as a value: :data:`TOPOLOGY`.

Each stage's entry says what it consumes (its lanes, in which consumer groups), where its results
go (the next stage), where its dead letters go, what else it reads, and which of its downstreams'
circuit breakers defer one message or pause the whole stage.  Everything else is derived from it:
the topic list (:func:`all_topics`: the topics Job, the local stack), routing (an output goes to
the next stage's lane: shared/runtime/process.py), a StageSpec's consumer groups and per-message
breakers, the report app's subscriptions, the chart's KEDA triggers (tests/deploy/test_helm.py
compares them with this value) and the README's topology table (shared/cli/topology.py).  No
service spells a topic name by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    INGEST = "ingest"
    DOWNLOAD = "download"
    VALIDATE = "validate"
    STORE = "store"
    REPORT = "report"


PREFIX = "fiscal"

DLQ = f"{PREFIX}.dlq"
PARKING = f"{PREFIX}.parking"  # dead letters past their replay limit, for an operator (shared/dlq)
STORED = f"{PREFIX}.stored"


class Lane(StrEnum):
    """The topics one stage consumes: its input, ``<input>.priority`` (drained first) and
    ``<input>.retry`` (transient failures, each due at its backoff)."""

    NORMAL = "normal"
    PRIORITY = "priority"
    RETRY = "retry"


class Consumer(StrEnum):
    """What consumes a stage's lanes, which decides its consumer groups."""

    # The stage runtime (shared/runtime): the normal and retry lanes in the stage's group, the
    # priority lane in ``<group>.priority`` (a consumer, so a fetch queue, of its own).
    RUNNER = "runner"
    # A faust app (services/report/app.py): every topic in one group, the app id.
    FAUST = "faust"


@dataclass(frozen=True)
class StageTopology:
    """One stage's place in the pipeline."""

    stage: Stage
    input: str  # the normal lane's topic; the other lanes are named after it
    next: Stage | None  # receives the stage's results, on the lane they came on (priority stays priority)
    lanes: tuple[Lane, ...] = (Lane.NORMAL, Lane.PRIORITY, Lane.RETRY)
    consumer: Consumer = Consumer.RUNNER
    dead_letters: str | None = DLQ  # where its permanent failures go (None: it writes none)
    side_inputs: tuple[str, ...] = ()  # read besides the lanes, in the stage's group
    # Breaker kinds.  A downstream that is a message's own (the prefix of what its StageSpec's
    # breaker_key returns, e.g. ``sftp:`` for ``sftp:north``) defers just the messages that need it;
    # any other downstream's failure pauses the whole stage until a probe succeeds.
    per_message_downstreams: tuple[str, ...] = ()
    stage_wide_downstreams: tuple[str, ...] = ()

    def topic(self, lane: Lane) -> str:
        if lane not in self.lanes:
            raise ValueError(f"the {self.stage} stage has no {lane} lane")
        return self.input if lane is Lane.NORMAL else f"{self.input}.{lane.value}"

    @property
    def topics(self) -> tuple[str, ...]:
        """Every lane's topic."""
        return tuple(self.topic(lane) for lane in self.lanes)

    @property
    def group(self) -> str:
        """The stage's consumer group in production."""
        return f"fiscalflow-{self.stage.value}"

    def lane_group(self, lane: Lane, group: str | None = None) -> str:
        """The consumer group that reads ``lane`` (``group``: the stage's group, default :attr:`group`)."""
        group = group or self.group
        return f"{group}.priority" if self.consumer is Consumer.RUNNER and lane is Lane.PRIORITY else group

    def subscriptions(self, group: str | None = None, namespace: str = "") -> dict[str, list[str]]:
        """Consumer group -> the topics it reads (what the consumers subscribe, lag metrics and KEDA
        watch); ``namespace`` prefixes every topic (tests run isolated pipelines on one broker)."""

        def ns(topic: str) -> str:
            return f"{namespace}.{topic}" if namespace else topic

        out: dict[str, list[str]] = {}
        for lane in self.lanes:
            out.setdefault(self.lane_group(lane, group), []).append(ns(self.topic(lane)))
        for topic in self.side_inputs:
            out.setdefault(group or self.group, []).append(ns(topic))
        return out


TOPOLOGY: dict[Stage, StageTopology] = {t.stage: t for t in (
    StageTopology(Stage.INGEST, f"{PREFIX}.ingest", next=Stage.DOWNLOAD, stage_wide_downstreams=("postgres",)),
    # A region's SFTP server down defers its records only: the other regions keep flowing.  S3: the
    # claim check of a document too large to travel inline.
    StageTopology(Stage.DOWNLOAD, f"{PREFIX}.download", next=Stage.VALIDATE, per_message_downstreams=("sftp:",),
                  stage_wide_downstreams=("postgres", "s3")),
    StageTopology(Stage.VALIDATE, f"{PREFIX}.validate", next=Stage.STORE, stage_wide_downstreams=("postgres", "s3")),
    StageTopology(Stage.STORE, f"{PREFIX}.store", next=Stage.REPORT, stage_wide_downstreams=("postgres", "s3")),
    # The end of the line: a faust app that also counts the dead letters.  It has no retry lane
    # (it retries a failed write in place, holding its partitions) and writes no dead letters.
    StageTopology(Stage.REPORT, STORED, next=None, lanes=(Lane.NORMAL, Lane.PRIORITY), consumer=Consumer.FAUST,
                  dead_letters=None, side_inputs=(DLQ,), stage_wide_downstreams=("clickhouse",)),
)}

# Topics that are no stage's lane, with ``FISCALFLOW_PARTITIONS_SHARED`` partitions: the dead
# letters (every runner stage writes them, the report counts them, ``fiscalflow dlq`` reads and
# replays them) and the parked ones (past their replay limit, written by ``fiscalflow dlq replay``).
SHARED_TOPICS = (DLQ, PARKING)


def input_topic(stage: Stage) -> str:
    """The normal input topic of a stage (the report stage reads ``fiscal.stored``)."""
    return TOPOLOGY[stage].topic(Lane.NORMAL)


def priority_topic(stage: Stage) -> str:
    return TOPOLOGY[stage].topic(Lane.PRIORITY)


def retry_topic(stage: Stage) -> str:
    """A runner stage's retry lane (the report stage has none: ValueError)."""
    return TOPOLOGY[stage].topic(Lane.RETRY)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


def all_topics(partitions: dict[Stage, int], shared_partitions: int, side_lanes: int) -> list[TopicSpec]:
    """Every topic the pipeline uses, with its partition count: each stage's normal lane with the
    stage's partitions (its parallelism), its priority and retry lanes with ``side_lanes`` of them
    at most, then :data:`SHARED_TOPICS` with ``shared_partitions``.

    A consumer's fetch names every unpaused partition it holds, and the broker answers each fetch
    after ``fetch.wait.max.ms`` whether it found records or not, so a lane's partitions cost the
    broker the same loaded or idle; the side lanes carry few records (decision 0039)."""
    specs = [TopicSpec(t.topic(lane), partitions[stage] if lane is Lane.NORMAL else min(side_lanes, partitions[stage]))
             for stage, t in TOPOLOGY.items() for lane in t.lanes]
    return specs + [TopicSpec(name, shared_partitions) for name in SHARED_TOPICS]
