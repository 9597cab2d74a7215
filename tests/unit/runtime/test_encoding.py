"""The headers a stage writes on outputs, retries and dead letters."""

from __future__ import annotations

import json

from shared.runtime import headers as H
from shared.runtime.encoding import dead_letter_headers, out_headers, retry_headers
from shared.runtime.message import Message
from shared.runtime.policy import DeadLetter, Retry


def _msg(headers: dict[str, str], attempt: int = 0, priority: bool = False,
         topic: str = "ns.fiscal.validate") -> Message:
    return Message(topic=topic, partition=2, offset=41, key=b"r1", value=b"{}", headers=headers,
                   timestamp_ms=1_000, priority=priority, attempt=attempt)


def test_outputs_carry_domain_headers_on_and_drop_the_runtime_ones_of_the_previous_hop() -> None:
    msg = _msg({H.JOB_ID: "j1", H.REPLAY_COUNT: "2", H.ATTEMPT: "3", H.DUE_AT_MS: "5", H.REASON: "X",
                "x-domain": "kept", H.TRACEPARENT: "00-" + "1" * 32 + "-" + "2" * 16 + "-00"}, priority=True)
    out = dict(out_headers(msg, {"x-new": "v"}))
    assert out[H.JOB_ID] == b"j1" and out[H.REPLAY_COUNT] == b"2" and out["x-domain"] == b"kept"
    assert out[H.PRIORITY] == b"1", "a priority record stays on the priority lane"
    assert out["x-new"] == b"v"
    assert not {H.ATTEMPT, H.DUE_AT_MS, H.REASON} & set(out), "runtime headers are per hop"


def test_a_retry_counts_the_attempt_keeps_the_origin_and_the_first_failure() -> None:
    first = retry_headers(_msg({}), Retry(0.25, "s3", count_attempt=True, error="boom"), now_ms=10_000)
    assert first[H.ATTEMPT] == "1" and first[H.DUE_AT_MS] == "10250"
    origin = (first[H.ORIGIN_TOPIC], first[H.ORIGIN_PARTITION], first[H.ORIGIN_OFFSET])
    assert origin == ("ns.fiscal.validate", "2", "41")
    assert first[H.FIRST_FAILURE_MS] == first[H.LAST_FAILURE_MS] == "10000" and first[H.ERROR_MESSAGE] == "boom"
    # The next hop reads it from the retry topic: the origin and the first failure travel on.
    again = _msg(first, attempt=1, topic="ns.fiscal.validate.retry")
    second = retry_headers(again, Retry(1.0, "sftp:north", count_attempt=False), now_ms=20_000)
    assert second[H.ATTEMPT] == "1", "a deferral costs no attempt"
    assert second[H.ORIGIN_TOPIC] == "ns.fiscal.validate" and second[H.FIRST_FAILURE_MS] == "10000"
    assert second[H.ERROR_MESSAGE] == "boom", "a deferral keeps the last error"


def test_a_dead_letter_says_where_why_and_after_how_many_attempts() -> None:
    msg = _msg({H.ORIGIN_TOPIC: "ns.fiscal.validate", H.ORIGIN_PARTITION: "1", H.ORIGIN_OFFSET: "7",
                H.FIRST_FAILURE_MS: "5"}, attempt=2, topic="ns.fiscal.validate.retry")
    dead = dead_letter_headers(msg, DeadLetter("INVALID_CFDI", "x" * 5000, {"rules": ["A"]}), "validate", 9, "ab" * 16)
    assert (dead[H.ORIGIN_TOPIC], dead[H.ORIGIN_OFFSET], dead[H.STAGE]) == ("ns.fiscal.validate", "7", "validate")
    assert dead[H.ATTEMPT] == "3", "the failing attempt counts"
    assert len(dead[H.ERROR_MESSAGE]) == 2000 and json.loads(dead[H.DETAILS]) == {"rules": ["A"]}
    assert (dead[H.FIRST_FAILURE_MS], dead[H.LAST_FAILURE_MS], dead[H.TRACE_ID]) == ("5", "9", "ab" * 16)
    exhausted = dead_letter_headers(msg, DeadLetter("RETRIES_EXHAUSTED", "e", attempts=6), "validate", 9, "")
    assert exhausted[H.ATTEMPT] == "6" and H.DETAILS not in exhausted
