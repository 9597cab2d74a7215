"""Which dead letters an operator means: by stage, reason, job, record and failure time."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.dlq.model import DeadLetter

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO time (naive means UTC: dead-letter times are UTC) or an age like ``90s``, ``2h``, ``3d``."""
    m = _RELATIVE.match(text)
    if m:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an ISO time or an age like 2h: {text!r}") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def read_record_ids(path: Path) -> set[str]:
    """One record id a line; blank lines and ``#`` comments ignored."""
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(line)
    return out


@dataclass(frozen=True)
class DeadLetterFilter:
    """Empty sets match everything; several values of one option are alternatives (OR), options
    combine (AND).  ``limit`` is applied by the caller, after the selection."""

    stages: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    jobs: frozenset[str] = frozenset()
    records: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    _reasons_upper: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Reason codes are upper case by convention; an operator typing them should not have to.
        object.__setattr__(self, "_reasons_upper", frozenset(r.upper() for r in self.reasons))

    def matches(self, dl: DeadLetter) -> bool:
        if self.records and dl.record_id not in self.records:
            return False
        if self.stages and dl.stage not in self.stages:
            return False
        if self._reasons_upper and dl.reason.upper() not in self._reasons_upper:
            return False
        if self.jobs and (dl.job_id or "") not in self.jobs:
            return False
        if self.since is not None and dl.failed_at < self.since:
            return False
        return not (self.until is not None and dl.failed_at > self.until)

    def select(self, letters: Iterable[DeadLetter]) -> list[DeadLetter]:
        out = [dl for dl in letters if self.matches(dl)]
        return out[: self.limit] if self.limit is not None else out
