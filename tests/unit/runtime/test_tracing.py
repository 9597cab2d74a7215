"""A message's processing context: the record's trace id from stage to stage, spans or not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.runtime import tracing

UPSTREAM = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def setup_module() -> None:
    tracing.setup_tracing("fiscalflow-test")  # as every service does, with no exporter


def test_unexported_processing_keeps_the_records_trace_and_hands_it_on() -> None:
    assert not tracing.recording()
    with tracing.consumer_span("validate process", {"traceparent": UPSTREAM}, {"fiscalflow.attempt": 0}) as span:
        span.set_attribute("fiscalflow.outcome", "ok")  # a no-op, never an error
        assert tracing.current_trace_id() == "0af7651916cd43dd8448eb211c80319c"
        out: dict[str, str] = {}
        tracing.inject(out)
        assert out["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert tracing.current_trace_id() == ""  # the block's context is gone after it


def test_a_message_without_a_trace_starts_one_and_hands_it_on() -> None:
    with tracing.consumer_span("ingest process", {}, {"fiscalflow.attempt": 0}) as span:
        first = tracing.current_trace_id()
        assert not span.is_recording()
        out: dict[str, str] = {}
        tracing.inject(out)
    with tracing.consumer_span("ingest process", {"traceparent": "garbage"}, {}):
        second = tracing.current_trace_id()
    assert len(first) == 32 and len(second) == 32 and first != second and int(first, 16) != 0
    version, trace_id, span_id, flags = out["traceparent"].split("-")
    # unsampled, the id random (W3C level 2: what the SDK's tracer sets)
    assert (version, trace_id, flags) == ("00", first, "02") and int(span_id, 16) != 0
    assert tracing.current_trace_id() == ""  # the block's context is gone after it


def _as_extracted(headers: dict[str, str]) -> tuple[object, ...]:
    from opentelemetry import trace
    sc = trace.get_current_span(tracing.extract(headers)).get_span_context()
    return sc.trace_id, sc.span_id, sc.trace_flags, sc.is_remote, sc.trace_state


def _as_processed(headers: dict[str, str]) -> tuple[object, ...]:
    span, _ = tracing._parent(headers)
    sc = span.get_span_context()
    return sc.trace_id, sc.span_id, sc.trace_flags, sc.is_remote, sc.trace_state


@pytest.mark.parametrize("headers", [
    {"traceparent": UPSTREAM},
    {"traceparent": UPSTREAM.replace("-00", "-01")},
    {"traceparent": UPSTREAM, "tracestate": "vendor=value"},
    {"traceparent": UPSTREAM.upper()},
    {"traceparent": " " + UPSTREAM + " "},
    {"traceparent": "01" + UPSTREAM[2:] + "-future"},
    {"traceparent": UPSTREAM + "-future"},
    {"traceparent": "ff" + UPSTREAM[2:]},
    {"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01"},
    {"traceparent": ""},
    {},
])
def test_a_message_s_trace_is_read_as_the_w3c_propagator_reads_it(headers: dict[str, str]) -> None:
    assert _as_processed(headers) == _as_extracted(headers)


@given(st.from_regex(r"[0-9a-fA-F]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-fA-F]{2}", fullmatch=True))
def test_any_traceparent_is_read_as_the_w3c_propagator_reads_it(traceparent: str) -> None:
    assert _as_processed({"traceparent": traceparent}) == _as_extracted({"traceparent": traceparent})
