"""Producer and consumer spans with the OpenTelemetry messaging attributes; W3C context in the envelope."""

from __future__ import annotations

import logging
import re
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import (
    DEFAULT_TRACE_STATE,
    NonRecordingSpan,
    Span,
    SpanContext,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .constants import F_TRACEPARENT, F_TRACESTATE, MESSAGING_SYSTEM

log = logging.getLogger(__name__)

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


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
"""W3C Trace Context ``traceparent`` (section 3.2): lower-case hex fields only; anything after the flags only
for versions above 00 (section 3.3, "Versioning of traceparent"), and never a line break."""
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16
MAX_TRACESTATE_CHARS = 8192
"""Longest ``tracestate`` read (W3C Trace Context, section 3.3.1.1: 512 is the minimum to propagate); a longer
one is ignored, as the OpenTelemetry propagator does."""


_FLAGS = tuple(TraceFlags(flags) for flags in range(256))
"""The ``TraceFlags`` of each ``trace-flags`` byte (one object per value, as ``TraceFlags.DEFAULT``)."""
_new_tuple = tuple.__new__


def parse_traceparent(traceparent: str) -> tuple[int, int, int] | None:
    """``(trace id, parent span id, trace flags)`` of a W3C ``traceparent``, or ``None`` when it does not
    follow the grammar of W3C Trace Context (section 3.2): exactly ``00-<32 hex>-<16 hex>-<2 hex>`` for
    version 00 (lower-case hex only: no sign, underscore, space or upper case, no further field), version
    ``ff`` invalid, all-zero trace or span ids invalid; a higher version is read by its first four fields
    (section 3.3). No surrounding white space is trimmed: an envelope field is not an HTTP header."""
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None
    return int(trace_id, 16), int(span_id, 16), int(flags, 16)


def remote_parent(traceparent: str | None, tracestate: str | None) -> SpanContext | None:
    """The remote parent span context carried by an entry (``None`` when absent or invalid, see
    :func:`parse_traceparent`), with the ``tracestate`` as the OpenTelemetry propagator reads it (one with an
    invalid member, or longer than :data:`MAX_TRACESTATE_CHARS`, is left out)."""
    if not traceparent:
        return None
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return None
    state = None
    if tracestate:
        if len(tracestate) <= MAX_TRACESTATE_CHARS:
            state = TraceState.from_header([tracestate])
        else:
            log.warning("tracestate longer than %d characters ignored", MAX_TRACESTATE_CHARS)
    trace_id, span_id, flags = parsed
    # SpanContext(trace_id, span_id, True, TraceFlags(flags), state) as its __new__ builds it, without its
    # checks: parse_traceparent gave non-zero ids of 128 and 64 bits at most, so the context is valid
    return _new_tuple(SpanContext, (trace_id, span_id, True, _FLAGS[flags], state or DEFAULT_TRACE_STATE, True))


def extract(traceparent: str | None, tracestate: str | None) -> otel_context.Context | None:
    """The remote parent context carried by an entry, if any (``None`` when absent or invalid): a context
    holding :func:`remote_parent` as a non-recording span."""
    if not traceparent:  # the common case without a producer span: no call further
        return None
    parent = remote_parent(traceparent, tracestate)
    return set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None


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
