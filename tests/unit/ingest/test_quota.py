"""Seed 002's priority quota: priority jobs take at most a share of the measured capacity, and a
refused job is told when it would fit (Retry-After)."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.ingest.backpressure import refusal
from services.ingest.capacity import MIN_FINISHED_FOR_RATE, Pace, PaceMeter
from services.ingest.quota import PriorityQuota, counts_for_s, decide
from shared.settings import Settings

RATE, WINDOW = 1.0, 10.0  # the share: 1 record/s, counted over 10 s (10 records a window)


def test_a_job_that_fits_the_windows_share_goes_and_one_past_it_waits_for_the_oldest_to_age_out() -> None:
    assert decide([], 10, RATE, WINDOW).admitted
    window = [(8.0, 4), (3.0, 4)]  # 4 records 8 s ago (2 s left to count), 4 records 3 s ago (7 s left)
    ok = decide(window, 2, RATE, WINDOW)
    assert (ok.admitted, ok.counted, ok.allowance) == (True, 8, 10.0)
    assert (v := decide(window, 3, RATE, WINDOW)).admitted is False and v.retry_after_s == pytest.approx(2.0)
    assert decide(window, 6, RATE, WINDOW).retry_after_s == pytest.approx(2.0)  # the first job's 4 free enough
    assert decide(window, 7, RATE, WINDOW).retry_after_s == pytest.approx(7.0)  # both must age out


def test_jobs_older_than_the_window_no_longer_count() -> None:
    verdict = decide([(10.0, 5), (25.0, 9)], 10, RATE, WINDOW)
    assert verdict.admitted and verdict.counted == 0


def test_a_job_bigger_than_the_windows_share_goes_alone_and_counts_until_the_share_would_have_finished_it() -> None:
    assert counts_for_s(25, RATE, WINDOW) == 25.0 and counts_for_s(3, RATE, WINDOW) == WINDOW
    assert decide([], 25, RATE, WINDOW).admitted  # nothing else counts: it goes
    # Not beside another priority job: it waits until that one stops counting.
    assert decide([(1.0, 2)], 25, RATE, WINDOW).retry_after_s == pytest.approx(9.0)
    # Once in, it holds the lane for 25 s (25 records at 1 record/s), not for one 10 s window.
    after = decide([(12.0, 25)], 1, RATE, WINDOW)
    assert not after.admitted and after.retry_after_s == pytest.approx(13.0)


def test_a_client_honouring_retry_after_gets_the_share_and_no_more_over_time() -> None:
    """Priority jobs of random sizes, each sent again after its Retry-After: over 20 minutes the
    admitted records stay within the share (plus one window's burst and one oversize job)."""
    rng = random.Random(7)
    now, admitted, horizon = 0.0, [], 1200.0
    sizes = [rng.choice([1, 3, 8, 15, 40]) for _ in range(2000)]
    for size in sizes:
        while True:
            verdict = decide([(now - at, n) for at, n in admitted], size, RATE, WINDOW)
            if verdict.admitted:
                admitted.append((now, size))
                break
            assert verdict.retry_after_s > 0
            now += math.ceil(verdict.retry_after_s)  # the header's whole seconds
            # Right after the promised wait, it fits.
            assert decide([(now - at, n) for at, n in admitted], size, RATE, WINDOW).admitted
        if now > horizon:
            break
    took = sum(n for at, n in admitted if at <= horizon)
    assert now > horizon, "the client stopped before the horizon: more sizes"
    assert took <= RATE * horizon + RATE * WINDOW + max(sizes)
    assert took >= 0.8 * RATE * horizon  # and the share is really given, not starved


def test_retry_after_is_whole_seconds_at_least_one_and_every_refusal_is_counted() -> None:
    def count() -> float:
        return REGISTRY.get_sample_value("fiscalflow_api_backpressure_total",
                                         {"status": "429", "reason": "priority_quota"}) or 0.0

    before = count()
    assert refusal(429, "priority_quota", "over", 0.2).headers == {"Retry-After": "1"}
    exc = refusal(429, "priority_quota", "over", 2.1)
    assert (exc.status_code, exc.detail, exc.headers) == (429, "over", {"Retry-After": "3"})
    assert count() == before + 2
    # Every series exists before its first refusal.
    assert REGISTRY.get_sample_value("fiscalflow_api_backpressure_total",
                                     {"status": "503", "reason": "pipeline_lag"}) is not None


class _Pool:
    """asyncpg's pool as PaceMeter uses it: one row per measurement, counted."""

    def __init__(self, finished: int, span_s: float | None) -> None:
        self.row = {"finished": finished, "span_s": span_s, "workers": 3, "in_flight": 7}
        self.queries = 0

    def acquire(self) -> Any:
        pool = self

        class _Conn:
            async def __aenter__(self) -> _Conn:
                return self

            async def __aexit__(self, *exc: object) -> None:
                return None

            async def fetchrow(self, sql: str) -> dict[str, Any]:
                pool.queries += 1
                await asyncio.sleep(0)
                return pool.row

        return _Conn()


def test_the_pace_is_measured_once_for_a_burst_and_again_when_stale() -> None:
    clock = [100.0]
    pool = _Pool(finished=600, span_s=300.0)
    meter = PaceMeter(pool, ttl_s=5.0, clock=lambda: clock[0])  # type: ignore[arg-type]

    async def burst() -> list[Pace]:
        return await asyncio.gather(*(meter.pace() for _ in range(20)))

    paces = asyncio.run(burst())
    assert pool.queries == 1 and {p.rate_per_s for p in paces} == {2.0}
    clock[0] += 4.9
    asyncio.run(meter.pace())
    assert pool.queries == 1
    clock[0] += 0.2
    asyncio.run(meter.pace())
    assert pool.queries == 2


@pytest.mark.parametrize(("finished", "span_s", "expected"), [
    (45_000, 300.0, (150.0, True)),  # measured above the floor: the measurement
    (200, 300.0, (100.0, False)),  # 0.67/s, a trickle of demand rather than capacity: the floor
    (MIN_FINISHED_FOR_RATE - 1, 1.0, (100.0, False)),  # too few to measure: the floor
    (0, None, (100.0, False)),  # an idle pipeline
])
def test_the_capacity_is_the_measured_rate_never_below_the_floor(finished: int, span_s: float | None,
                                                                 expected: tuple[float, bool]) -> None:
    meter = PaceMeter(_Pool(finished, span_s))  # type: ignore[arg-type]
    quota = PriorityQuota(Settings(priority_capacity_floor_per_s=100.0), meter, 100_000)
    assert asyncio.run(quota.capacity()) == expected
