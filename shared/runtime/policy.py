"""What becomes of a message that did not succeed, and when a stage must halt: pure, no I/O.

* a permanent error is a dead letter at once (its rejection must be recorded first; if recording
  fails, that is a transient failure of the state store);
* a transient error, or a handler crash, is a retry after an exponential backoff with full
  jitter, until the attempts run out: then a dead letter (RETRIES_EXHAUSTED, HANDLER_CRASHED);
* an output the broker refused for its size can never be delivered: a dead letter at once;
* the reject ratio halts the stage when too many of the last messages became dead letters (a bad
  deploy or a broken issuer must not drain a backlog into the dead-letter topic).
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.domain.reasons import ReasonCode
from shared.runtime import headers as H
from shared.runtime.errors import PermanentError, TransientError


@dataclass(frozen=True, slots=True)
class Retry:
    """Send the message to the retry lane, due in ``delay_s``."""

    delay_s: float
    downstream: str
    count_attempt: bool  # False: a deferral (its downstream was known down), not a failed attempt
    error: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    attempts: int | None = None  # None: this was the message's first failing attempt (attempt + 1)
    # True: the rejection must be recorded before the dead letter, or the message is retried
    # instead (a permanent error); False: a failure to record it is only logged (retries ran out).
    must_record: bool = False


Outcome = Retry | DeadLetter
Uniform = Callable[[float, float], float]


class RetryPolicy:
    def __init__(self, max_attempts: int, base_ms: int, max_ms: int, uniform: Uniform = random.uniform) -> None:
        self.max_attempts = max_attempts
        self.base_s = base_ms / 1000
        self.cap_s = max_ms / 1000
        self.uniform = uniform

    def backoff(self, attempts: int) -> float:
        """Exponential with full jitter (no thundering herd when a downstream returns)."""
        return self.uniform(self.base_s / 2, min(self.cap_s, self.base_s * (2 ** max(0, attempts - 1))))

    def retry_or_exhaust(self, attempt: int, error: str, downstream: str, exhausted_reason: str,
                         count_attempt: bool, max_attempts: int | None = None) -> Outcome:
        """``max_attempts``: the record's own budget (its job's max_retries + 1), else the stage's."""
        attempts = attempt + (1 if count_attempt else 0)
        if attempts >= (max_attempts if max_attempts is not None else self.max_attempts):
            return DeadLetter(exhausted_reason, error, {"downstream": downstream}, attempts=attempts)
        return Retry(self.backoff(attempts), downstream, count_attempt, error)

    def on_error(self, attempt: int, exc: Exception, probe: bool = False,
                 max_attempts: int | None = None) -> Outcome:
        """The outcome of a failed handler call; ``probe``: it was a breaker's half-open probe
        (or its downstream's breaker was not closed), which costs no attempt."""
        if isinstance(exc, PermanentError):
            return DeadLetter(exc.reason, exc.message, exc.details, must_record=True)
        if isinstance(exc, TransientError):
            return self.retry_or_exhaust(attempt, str(exc), exc.downstream or "unknown",
                                         ReasonCode.RETRIES_EXHAUSTED, count_attempt=not probe,
                                         max_attempts=max_attempts)
        return self.retry_or_exhaust(attempt, f"{type(exc).__name__}: {exc}", "handler",
                                     ReasonCode.HANDLER_CRASHED, count_attempt=True, max_attempts=max_attempts)

    def on_record_failure(self, attempt: int, hook_exc: Exception, max_attempts: int | None = None) -> Outcome:
        """Recording a permanent rejection failed (the state store is down): retry, never lose it."""
        return self.retry_or_exhaust(attempt, f"recording the rejection failed: {hook_exc}", "postgres",
                                     ReasonCode.RETRIES_EXHAUSTED, count_attempt=True, max_attempts=max_attempts)

    @staticmethod
    def on_too_large(message: str, details: dict[str, Any]) -> DeadLetter:
        """An output refused for its size: no retry makes it fit, so its input is a dead letter now."""
        return DeadLetter(ReasonCode.MESSAGE_TOO_LARGE, message, details, must_record=True)

    def deferral(self, next_probe_in: float, downstream: str) -> Retry:
        """The message's own downstream is known down: wait for its next probe, without an attempt."""
        return Retry(next_probe_in + self.uniform(0.1, 0.5), downstream, count_attempt=False)


class RejectRatio:
    """Halts when more than ``threshold`` of the last ``window`` outcomes were dead letters."""

    def __init__(self, window: int, threshold: float) -> None:
        self._outcomes: collections.deque[int] = collections.deque(maxlen=window)
        self.threshold = threshold
        self.halted = ""

    def record(self, rejected: bool, last_dead_letter: str = "") -> str:
        """Count an outcome; the halt reason when this one halts the stage, else ""."""
        self._outcomes.append(1 if rejected else 0)
        if (not rejected or self.threshold <= 0 or self.halted
                or len(self._outcomes) < (self._outcomes.maxlen or 0)):
            return ""
        ratio = sum(self._outcomes) / len(self._outcomes)
        if ratio <= self.threshold:
            return ""
        self.halted = (f"halted: {ratio:.0%} of the last {len(self._outcomes)} messages became dead letters "
                       f"(threshold {self.threshold:.0%}); last: {last_dead_letter}. Fix the cause, then "
                       "restart the stage (its backlog waits in Kafka).")
        return self.halted


def record_max_attempts(headers: dict[str, str]) -> int | None:
    """The record's own attempt budget (header ``ff-max-attempts``, set from its job's max_retries);
    None, the stage's, when absent or unreadable (a header is input: it never crashes a stage)."""
    raw = headers.get(H.MAX_ATTEMPTS)
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        return None
    return n if 1 <= n <= 101 else None
