"""Producer and consumer spans with the OpenTelemetry messaging attributes; W3C context in the envelope."""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    TraceFlags,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .constants import F_TRACEPARENT, F_TRACESTATE, MESSAGING_SYSTEM

_propagator = TraceContextTextMapPropagator()


def exports_spans(provider: Any) -> bool:
    """False when the tracer provider has no span processor, i.e. no span would ever leave the process (no
    ``OTEL_EXPORTER_OTLP_ENDPOINT``): the bus then only propagates the context instead of recording spans."""
    active = getattr(provider, "_active_span_processor", None)
    processors = getattr(active, "_span_processors", None)
    return processors is None or len(processors) > 0


def inject_current() -> tuple[str | None, str | None]:
    """The ``traceparent``/``tracestate`` of the current context (``None`` outside any trace)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(F_TRACEPARENT), carrier.get(F_TRACESTATE)


def inject(span: Span) -> tuple[str | None, str | None]:
    """The ``traceparent``/``tracestate`` of ``span``."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=set_span_in_context(span))
    return carrier.get(F_TRACEPARENT), carrier.get(F_TRACESTATE)


_NOT_FAST = SpanContext(0, 0, is_remote=True)
"""Marker: the ``traceparent`` is not of the common form the fast path reads."""


def _fast_parent(traceparent: str) -> SpanContext | None:
    """The common case, version 00 (W3C Trace Context, section 3.2), read without the propagator: the span
    context, ``None`` when invalid, :data:`_NOT_FAST` for another form."""
    parts = traceparent.split("-")
    if len(parts) == 4 and parts[0] == "00" and len(parts[1]) == 32 and len(parts[2]) == 16:
        try:
            trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
        except ValueError:
            return None
        if not trace_id or not span_id:
            return None
        return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 0xFF))
    return _NOT_FAST


def _propagated(traceparent: str, tracestate: str | None) -> otel_context.Context:
    carrier = {F_TRACEPARENT: traceparent}
    if tracestate:
        carrier[F_TRACESTATE] = tracestate
    return _propagator.extract(carrier)


def remote_parent(traceparent: str | None, tracestate: str | None) -> SpanContext | None:
    """The remote parent span context carried by an entry, if any (``None`` when absent or invalid): the
    span context of :func:`extract`'s context."""
    if not traceparent:
        return None
    if tracestate is None:
        found = _fast_parent(traceparent)
        if found is not _NOT_FAST:
            return found
    parent = get_current_span(_propagated(traceparent, tracestate)).get_span_context()
    return parent if parent.is_valid else None


def extract(traceparent: str | None, tracestate: str | None) -> otel_context.Context | None:
    """The remote parent context carried by an entry, if any (``None`` when absent or invalid)."""
    if not traceparent:
        return None
    if tracestate is None:
        found = _fast_parent(traceparent)
        if found is None:
            return None
        if found is not _NOT_FAST:
            return set_span_in_context(NonRecordingSpan(found))
    return _propagated(traceparent, tracestate)


def attributes(
    destination: str,
    operation: str,
    message_id: str | None,
    group: str | None = None,
    batch: int = 0,
    deliveries: int = 1,
) -> dict[str, str | int]:
    """OpenTelemetry messaging attributes (``message_id`` for one message, ``batch`` for a batch send,
    ``deliveries`` above 1 for a redelivered message)."""
    attrs: dict[str, str | int] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.destination.name": destination,
        "messaging.operation.type": operation,
    }
    if message_id is not None:
        attrs["messaging.message.id"] = message_id
    if batch:
        attrs["messaging.batch.message_count"] = batch
    if group is not None:
        attrs["messaging.consumer.group.name"] = group
    if deliveries > 1:
        attrs["messaging.message.delivery_count"] = deliveries
    return attrs
