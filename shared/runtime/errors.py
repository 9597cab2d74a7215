"""Typed outcomes a handler raises; the runtime turns them into retries or dead letters."""

from __future__ import annotations

from typing import Any


class PermanentError(Exception):
    """The message can never succeed: dead-letter it at once with a stable reason code."""

    def __init__(self, reason: str, message: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message or reason
        self.details = details or {}


class TransientError(Exception):
    """A downstream is unavailable or slow: retry later, never a dead letter unless retries run out.

    ``downstream`` names the dependency (``s3``, ``postgres``, ``sftp:north``...) so its circuit
    breaker learns about the failure.  ``None`` means an unattributed transient failure.
    """

    def __init__(self, message: str, downstream: str | None = None) -> None:
        super().__init__(message)
        self.downstream = downstream
