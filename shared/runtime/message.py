"""What a handler receives and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Message:
    """One consumed Kafka message, with the lane and attempt it travels on."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    timestamp_ms: int
    priority: bool = False
    attempt: int = 0  # failed attempts before this one (0 on first delivery)

    @property
    def record_id(self) -> str:
        return self.key.decode("utf-8", "replace") if self.key else ""


@dataclass(slots=True)
class Emit:
    """An output message, to the next stage of the topology (shared/topics.py) on the lane its
    input came on; ``topic`` names any other topic instead (no stage uses one today; the
    runtime's tests and benchmark do)."""

    value: bytes
    topic: str | None = None
    key: bytes | None = None  # default: the input message's key
    headers: dict[str, str] = field(default_factory=dict)
