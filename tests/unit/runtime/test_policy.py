"""The outcome policy and the reject ratio: pure decisions, no broker."""

from __future__ import annotations

import pytest

from shared.runtime.errors import PermanentError, TransientError
from shared.runtime.policy import DeadLetter, RejectRatio, Retry, RetryPolicy


def _hi(lo: float, hi: float) -> float:
    return hi


def _lo(lo: float, hi: float) -> float:
    return lo


def test_backoff_doubles_per_attempt_up_to_the_cap_with_jitter_down_to_half_the_base() -> None:
    top = RetryPolicy(max_attempts=10, base_ms=500, max_ms=3_000, uniform=_hi)
    assert [top.backoff(a) for a in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    bottom = RetryPolicy(max_attempts=10, base_ms=500, max_ms=3_000, uniform=_lo)
    assert {bottom.backoff(a) for a in (1, 2, 5)} == {0.25}


def test_a_transient_error_is_retried_until_the_attempts_run_out() -> None:
    policy = RetryPolicy(max_attempts=3, base_ms=100, max_ms=1_000, uniform=_hi)
    exc = TransientError("s3 is down", downstream="s3")
    assert policy.on_error(0, exc) == Retry(0.1, "s3", count_attempt=True, error="s3 is down")
    assert policy.on_error(1, exc) == Retry(0.2, "s3", count_attempt=True, error="s3 is down")
    dead = policy.on_error(2, exc)
    assert dead == DeadLetter("RETRIES_EXHAUSTED", "s3 is down", {"downstream": "s3"}, attempts=3)
    assert not dead.must_record, "retries ran out: a failure to record it must not loop"


def test_a_probe_or_an_open_breaker_costs_no_attempt() -> None:
    policy = RetryPolicy(max_attempts=3, base_ms=100, max_ms=1_000, uniform=_hi)
    out = policy.on_error(2, TransientError("still down", downstream="s3"), probe=True)
    assert isinstance(out, Retry) and not out.count_attempt, "a probe never exhausts the message"
    assert policy.on_error(0, TransientError("x")).downstream == "unknown"  # type: ignore[union-attr]


def test_a_permanent_error_is_a_dead_letter_at_once_whose_rejection_must_be_recorded() -> None:
    policy = RetryPolicy(max_attempts=3, base_ms=100, max_ms=1_000)
    out = policy.on_error(0, PermanentError("INVALID_CFDI", "bad seal", {"rules": ["SELLO"]}))
    assert out == DeadLetter("INVALID_CFDI", "bad seal", {"rules": ["SELLO"]}, attempts=None, must_record=True)
    retry = policy.on_record_failure(0, OSError("postgres down"))
    assert isinstance(retry, Retry) and retry.downstream == "postgres" and "postgres down" in retry.error


def test_a_handler_crash_is_retried_then_dead_lettered_as_a_crash() -> None:
    policy = RetryPolicy(max_attempts=2, base_ms=100, max_ms=1_000)
    first = policy.on_error(0, ZeroDivisionError("division by zero"))
    assert isinstance(first, Retry) and first.downstream == "handler"
    assert first.error == "ZeroDivisionError: division by zero"
    last = policy.on_error(1, ZeroDivisionError("division by zero"))
    assert isinstance(last, DeadLetter) and last.reason == "HANDLER_CRASHED" and last.attempts == 2


def test_an_output_refused_for_its_size_dead_letters_its_input_at_once() -> None:
    out = RetryPolicy.on_too_large("a 2000000-byte message to out is over the limit", {"size": 2_000_000})
    assert out == DeadLetter("MESSAGE_TOO_LARGE", "a 2000000-byte message to out is over the limit",
                             {"size": 2_000_000}, attempts=None, must_record=True)


def test_a_deferral_waits_for_the_next_probe_and_costs_no_attempt() -> None:
    out = RetryPolicy(max_attempts=3, base_ms=100, max_ms=1_000, uniform=_lo).deferral(1.5, "sftp:north")
    assert out == Retry(1.6, "sftp:north", count_attempt=False)


def test_the_reject_ratio_halts_once_the_window_is_full_and_over_the_threshold() -> None:
    ratio = RejectRatio(window=10, threshold=0.5)
    for _ in range(4):
        assert ratio.record(False) == ""
    for _ in range(5):
        assert ratio.record(True, "X (r)") == "", "the window is not full yet"
    assert ratio.record(True, "TEST (r9)").startswith("halted: 60% of the last 10 messages")
    assert "TEST (r9)" in ratio.halted and "restart" in ratio.halted
    assert ratio.record(True) == "", "it halts once; the reason stays"
    assert ratio.halted


@pytest.mark.parametrize("threshold", [0.0, 0.9])
def test_the_reject_ratio_does_not_halt_at_or_under_its_threshold(threshold: float) -> None:
    ratio = RejectRatio(window=10, threshold=threshold)
    for i in range(30):
        ratio.record(i % 10 != 0)  # 90 % rejected
    assert ratio.halted == ""


def test_a_records_own_attempt_budget_comes_from_its_header_and_a_bad_one_is_the_stages() -> None:
    from shared.runtime import headers as H
    from shared.runtime.policy import record_max_attempts

    assert record_max_attempts({H.MAX_ATTEMPTS: "3"}) == 3
    for bad in ("", "0", "-1", "x", "1e3", "102"):
        assert record_max_attempts({H.MAX_ATTEMPTS: bad}) is None, bad
    assert record_max_attempts({}) is None
    policy = RetryPolicy(6, 100, 1000, uniform=lambda a, b: b)
    assert isinstance(policy.on_error(0, TransientError("down", downstream="s3"), max_attempts=1), DeadLetter)
    assert isinstance(policy.on_error(0, TransientError("down", downstream="s3")), Retry)
