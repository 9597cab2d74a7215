"""A message's processing context: the record's trace id from stage to stage, spans or not."""

from __future__ import annotations

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
