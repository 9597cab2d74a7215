"""OpenTelemetry: one trace per record across the stages, context in Kafka headers (W3C)."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Mapping

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


# A version-00 traceparent exactly as the SDK writes one (every message of this system carries
# one): what the propagator's extract accepts, parsed by one regular expression instead of its
# search, version and id checks (every other header, tracestate included, still goes through it).
_TRACEPARENT_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _parent(headers: Mapping[str, str]) -> tuple[trace.Span, Context]:
    """The span and context ``extract`` makes of ``headers`` (an invalid span when they carry no trace)."""
    header = headers.get("traceparent")
    if header is not None and "tracestate" not in headers:
        match = _TRACEPARENT_00.fullmatch(header)
        if match is not None:
            trace_id, span_id = int(match[1], 16), int(match[2], 16)
            if trace_id and span_id:
                span = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=True,
                                                    trace_flags=TraceFlags(int(match[3], 16))))
                return span, trace.set_span_in_context(span, Context())  # on nothing, as extract's
    parent = _PROPAGATOR.extract(headers)
    return trace.get_current_span(parent), parent


class _Attached:
    """``span`` current for the block (``context`` attached), as ``use_span`` would make it, without
    a span of our own to end; a class, not a generator: it is entered once per message."""

    __slots__ = ("context", "span", "token")

    def __init__(self, span: trace.Span, context: Context) -> None:
        self.span, self.context = span, context

    def __enter__(self) -> trace.Span:
        self.token = otel_context.attach(self.context)
        return self.span

    def __exit__(self, *_exc: object) -> None:
        otel_context.detach(self.token)


def consumer_span(name: str, headers: dict[str, str],
                  attributes: Mapping[str, str | int]) -> contextlib.AbstractContextManager[trace.Span]:
    """A message's processing span, current for the block, child of the trace in its headers.

    Recorded only when exported (``recording()``).  Otherwise, for a message that carries a trace, the
    block runs in that trace's context as it came (no span of its own: no sampler, ids or span object
    per message, ~5 % of a stage's CPU measured in the seed scenario): logs, audit events, dead letters
    and the next stage's headers carry the record's trace id all the same.  A message without one
    starts a trace: a non-recording span with new ids, current for the block.  Unrecorded, a
    message's context costs 8.4 instead of 12.0 µs in a loop (span, headers out, trace id;
    decision 0005's addendum)."""
    if recording():
        return _TRACER.start_as_current_span(name, context=extract(headers), kind=trace.SpanKind.CONSUMER,
                                             attributes=dict(attributes))
    span, context = _parent(headers)
    if not span.get_span_context().is_valid:
        # What the tracer would make with nothing recording (ALWAYS_OFF): a non-recording span
        # with new random ids, unsampled.  Made directly: 11 -> 4.4 µs per message in a loop (every
        # record's trace starts in the ingest stage).
        span = NonRecordingSpan(SpanContext(_IDS.generate_trace_id(), _IDS.generate_span_id(), is_remote=False,
                                            trace_flags=TraceFlags(TraceFlags.RANDOM_TRACE_ID)))
        context = trace.set_span_in_context(span, context)
    return _Attached(span, context)
