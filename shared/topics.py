"""Stage names and topic names: the pipeline's wiring, declared once.

Every topic a stage reads or writes is derived here, so a newcomer sees the whole
topology in one place and no service spells a topic name by hand.
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


def input_topic(stage: Stage) -> str:
    """The normal input topic of a stage (the report stage reads ``fiscal.stored``)."""
    if stage is Stage.REPORT:
        return STORED
    return f"{PREFIX}.{stage.value}"


def priority_topic(stage: Stage) -> str:
    return f"{input_topic(stage)}.priority"


def retry_topic(stage: Stage) -> str:
    """A StageRunner stage's retry lane.  The report stage has none: it is a faust app that retries
    a failed write in place (nothing produces to ``fiscal.stored.retry``, so nothing may create it)."""
    if stage is Stage.REPORT:
        raise ValueError("the report stage has no retry topic")
    return f"{input_topic(stage)}.retry"


# The stage that consumes a stage's output.
NEXT_STAGE: dict[Stage, Stage | None] = {
    Stage.INGEST: Stage.DOWNLOAD,
    Stage.DOWNLOAD: Stage.VALIDATE,
    Stage.VALIDATE: Stage.STORE,
    Stage.STORE: Stage.REPORT,
    Stage.REPORT: None,
}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


def all_topics(partitions: dict[Stage, int], shared_partitions: int) -> list[TopicSpec]:
    """Every topic the pipeline uses, with its partition count.

    A stage's normal, priority and retry topics share its partition count: its
    parallelism (the report stage reads fiscal.stored and fiscal.stored.priority; it has no retry
    lane).  The dead-letter and parking topics use ``shared_partitions``.
    """
    specs: list[TopicSpec] = []
    for stage in Stage:
        n = partitions[stage]
        specs.append(TopicSpec(input_topic(stage), n))
        specs.append(TopicSpec(priority_topic(stage), n))
        if stage is not Stage.REPORT:
            specs.append(TopicSpec(retry_topic(stage), n))
    for name in (DLQ, PARKING):
        specs.append(TopicSpec(name, shared_partitions))
    return specs
