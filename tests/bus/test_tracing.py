"""Unit tests of the trace-context helpers used on every consumed event."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from novapulse_runtime.bus.tracing import extract, inject

pytestmark = pytest.mark.unit

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_extract_parses_a_w3c_traceparent() -> None:
    ctx = extract(VALID, None)
    assert ctx is not None
    parent = trace.get_current_span(ctx).get_span_context()
    assert parent.is_remote
    assert f"{parent.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{parent.span_id:016x}" == "b7ad6b7169203331"
    assert parent.trace_flags.sampled


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0af7651916cd43dd8448eb211c80319z-b7ad6b7169203331-01",
    ],
)
def test_extract_ignores_an_invalid_traceparent(value: str) -> None:
    ctx = extract(value, None)
    assert ctx is None or not trace.get_current_span(ctx).get_span_context().is_valid


def test_inject_then_extract_round_trips_with_tracestate() -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("p") as span:
        traceparent, tracestate = inject(span)
    assert traceparent is not None
    ctx = extract(traceparent, "k=v")
    assert ctx is not None
    parent = trace.get_current_span(ctx).get_span_context()
    assert parent.span_id == span.get_span_context().span_id
    assert parent.trace_state.get("k") == "v"
    assert tracestate is None
