"""What failed deliveries mean: an outage (hold the input, try again) or a refusal for size
(permanent: no retry makes a message fit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.runtime.kafka import DeliveryError


class OutputNotDelivered(Exception):
    """The broker did not acknowledge an output: the input stays uncommitted."""


class MessageTooLarge(OutputNotDelivered):
    """An output was refused for its size: permanent.  (An OutputNotDelivered, so that wherever it
    is not turned into a dead letter it still holds its input back rather than losing it.)"""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


def delivery_failure(sent: Sequence[tuple[str, int]], results: Sequence[object],
                     limit: int) -> OutputNotDelivered | None:
    """What failed deliveries mean: ``MessageTooLarge`` (permanent) when any output was refused for
    its size, else ``OutputNotDelivered`` (an outage: hold the input, try again), else None."""
    for (topic, size), r in zip(sent, results, strict=True):
        if isinstance(r, DeliveryError) and r.too_large:
            return MessageTooLarge(f"a {size}-byte message to {topic} is over the message limit ({limit} bytes): {r}",
                                   {"size": size, "limit": limit, "topic": topic})
    errors = [r for r in results if isinstance(r, BaseException)]
    return OutputNotDelivered(str(errors[0])) if errors else None


def message_size(value: bytes | None, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> int:
    """A message's size as a producer counts it (key, value, header names and values)."""
    return len(value or b"") + len(key or b"") + sum(len(k) + len(v) for k, v in headers)
