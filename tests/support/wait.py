"""Waits on conditions, not sleeps: poll until a check holds, and fail saying what never came."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(ok: Callable[[], object], what: str, timeout: float, every: float = 0.25) -> None:
    """Poll ``ok()`` until it is truthy; fail after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def wait_for(value: Callable[[], T], ok: Callable[[T], bool], what: str, timeout: float,
             every: float = 0.5) -> T:
    """Poll ``value()`` until ``ok`` holds for it; return it.  On timeout the failure shows the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = value()
        if ok(v):
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached in {timeout:.0f} s; last: {v!r}")
        time.sleep(every)


def wait_steady(value: Callable[[], T], ok: Callable[[T], bool], what: str, timeout: float,
                every: float = 1.0, polls: int = 3) -> T:
    """Poll until ``value()`` is ok ``polls`` times in a row, unchanged (a late double count would
    change it); return it."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    same = 0
    while time.monotonic() < deadline:
        v = value()
        same = same + 1 if ok(v) and v == last else 0
        if same >= polls - 1:
            return v
        last = v
        time.sleep(every)
    raise AssertionError(f"{what}: not reached in {timeout:.0f} s; last: {last!r}")
