"""OpenTelemetry: one trace per record across the stages, context in Kafka headers (W3C)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_IDS = RandomIdGenerator()  # the tracer provider's default: random ids, never the invalid 0
_lock = threading.Lock()
_provider: TracerProvider | None = None


def setup_tracing(service_name: str, otlp_endpoint: str = "", extra: SpanProcessor | None = None) -> TracerProvider:
    """Install the process's tracer provider once; export over OTLP/HTTP when configured.

    Spans are recorded only when something receives them (an OTLP endpoint, or ``extra``).
    Without one every span is non-recording: it still carries the record's trace id from stage
    to stage (``traceparent``, audit events, dead letters, logs), but costs ~20 µs per message
    instead of ~60-120 µs for a recorded span that nobody would read (decision 0005,
    docs/decisions/0005).  Set the endpoint on every service: a service that exports
    records its own spans whatever the upstream did (ALWAYS_ON, not parent-based).
    """
    global _provider
    with _lock:
        if _provider is None:
            exporting = bool(otlp_endpoint) or extra is not None
            _provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                                       sampler=ALWAYS_ON if exporting else ALWAYS_OFF)
            if otlp_endpoint:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
            trace.set_tracer_provider(_provider)
        elif extra is not None and _provider.sampler is ALWAYS_OFF:
            raise RuntimeError("tracing was set up without an exporter: spans are not recorded")
        if extra is not None:
            _provider.add_span_processor(extra)
        return _provider


# A proxy tracer: it follows whichever provider is installed later, so it can be made once.
_TRACER = trace.get_tracer("fiscalflow")


def tracer() -> trace.Tracer:
    return _TRACER


def extract(headers: dict[str, str]) -> Context:
    return _PROPAGATOR.extract(headers)


def inject(headers: dict[str, str]) -> None:
    _PROPAGATOR.inject(headers)


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.trace_id else ""


def recording() -> bool:
    """Are spans recorded (an exporter or an extra processor is set up)?"""
    return _provider is not None and _provider.sampler is ALWAYS_ON


@contextlib.contextmanager
def consumer_span(name: str, headers: dict[str, str], attributes: Mapping[str, str | int]) -> Iterator[trace.Span]:
    """A message's processing span, current for the block, child of the trace in its headers.

    Recorded only when exported (``recording()``).  Otherwise, for a message that carries a trace, the
    block runs in that trace's context as it came (no span of its own: no sampler, ids or span object
    per message, ~5 % of a stage's CPU measured in the seed scenario): logs, audit events, dead letters
    and the next stage's headers carry the record's trace id all the same.  A message without one
    starts a trace: a non-recording span with new ids, current for the block."""
    parent = extract(headers)
    if not recording():
        span = trace.get_current_span(parent)
        context = parent
        if not span.get_span_context().is_valid:
            # What the tracer would make with nothing recording (ALWAYS_OFF): a non-recording span
            # with new random ids, unsampled.  Made directly: 11 -> 4.4 µs per message in a loop (every
            # record's trace starts in the ingest stage).
            span = NonRecordingSpan(SpanContext(_IDS.generate_trace_id(), _IDS.generate_span_id(), is_remote=False,
                                                trace_flags=TraceFlags(TraceFlags.RANDOM_TRACE_ID)))
            context = trace.set_span_in_context(span, parent)
        token = otel_context.attach(context)
        try:
            yield span
        finally:
            otel_context.detach(token)
        return
    with _TRACER.start_as_current_span(name, context=parent, kind=trace.SpanKind.CONSUMER,
                                       attributes=dict(attributes)) as new:
        yield new
