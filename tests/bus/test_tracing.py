"""Unit tests of the trace-context helpers used on every consumed event."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from novapulse_runtime.bus.operations import valid_entry_id
from novapulse_runtime.bus.tracing import extract, inject, parse_traceparent, remote_parent

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


TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


@pytest.mark.parametrize(
    "value",
    [
        f"00-+{TRACE[1:]}-{SPAN}-01",  # int(x, 16) took a sign ...
        f"00-{TRACE}--{SPAN[1:]}-01",
        f"00-{TRACE}-{SPAN}-+1",
        f"00-{TRACE[:10]}_{TRACE[11:]}-{SPAN}-01",  # ... an underscore between digits ...
        f"00- {TRACE[1:]}-{SPAN}-01",  # ... and white space
        f"00-{TRACE}-{SPAN}- 1",
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper-case hex
        f"00-{TRACE}-{SPAN.upper()}-01",
        f"00-{TRACE}-{SPAN}-0A",
        f"00-{TRACE}-{SPAN}-1",  # flags are two digits
        f"00-{TRACE}-{SPAN}-001",
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"0g-{TRACE}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero ids are invalid
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE}-{SPAN}-01\n",  # "$" of a regex would take a trailing line break
        f" 00-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-01 ",
        f"01-{TRACE}-{SPAN}-01x",  # a later version: the 56th character must be a dash
        f"00-{TRACE}-{SPAN}",
        f"00-{TRACE}0-{SPAN}-01",
        f"00-\u0660{TRACE[1:]}-{SPAN}-01",  # a non-ASCII digit (int() reads it)
    ],
)
def test_a_traceparent_outside_the_w3c_grammar_is_ignored(value: str) -> None:
    assert parse_traceparent(value) is None
    assert remote_parent(value, None) is None
    assert remote_parent(value, "k=v") is None
    assert extract(value, None) is None


def test_a_later_traceparent_version_is_read_by_its_first_fields() -> None:
    """W3C Trace Context, section 3.3: a version above 00 may carry more fields after the flags."""
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-01-more") == (int(TRACE, 16), int(SPAN, 16), 1)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-03") == (int(TRACE, 16), int(SPAN, 16), 3)


@pytest.mark.parametrize("state", [None, "k=v,other=w"])
def test_the_remote_parent_is_the_span_context_the_propagator_extracts(state: str | None) -> None:
    """Field by field (is_valid and the flags' type included), for every flags byte."""
    propagator = TraceContextTextMapPropagator()
    for flags in range(256):
        traceparent = f"00-{TRACE}-{SPAN}-{flags:02x}"
        carrier = {"traceparent": traceparent, **({"tracestate": state} if state else {})}
        expected = trace.get_current_span(propagator.extract(carrier)).get_span_context()
        parent = remote_parent(traceparent, state)
        assert parent is not None
        assert parent == expected
        assert (parent.is_valid, parent.is_remote, type(parent.trace_flags)) == (True, True, TraceFlags)
        assert (parent.trace_flags.sampled, parent.trace_flags.random_trace_id) == (
            expected.trace_flags.sampled,
            expected.trace_flags.random_trace_id,
        )
        assert dict(parent.trace_state) == dict(expected.trace_state)


def test_tracestate_is_read_as_the_propagator_reads_it() -> None:
    parent = remote_parent(VALID, "k=v,other=w")
    assert parent is not None
    assert dict(parent.trace_state) == {"k": "v", "other": "w"}
    broken = remote_parent(VALID, "not a member")
    assert broken is not None
    assert dict(broken.trace_state) == {}
    too_long = remote_parent(VALID, "k=" + "v" * 9000)
    assert too_long is not None
    assert dict(too_long.trace_state) == {}


@pytest.mark.parametrize(
    ("value", "valid"),
    [("1-2", True), ("1-2\n", False), (" 1-2", False), ("1-+2", False), ("1_0-2", False), ("1-2-3", False)],
)
def test_an_entry_id_is_matched_in_full(value: str, valid: bool) -> None:
    assert valid_entry_id(value) is valid


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
