"""The bus's lean recorded spans (``SamplingShortcut.start`` → ``RecordedSpan``) against the SDK's own
``Tracer.start_span``: with the same random draws, the spans the configured exporter receives are the same —
names, kind, ids, parent, flags, trace state, attributes, status, events, links, resource, scope, dropped
counts — and so are the sampling decisions and the handler's child spans."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from novapulse_runtime.bus.tracing import attributes
from novapulse_runtime.tracing import RecordedSpan, Tracing, attach_span, detach_span, sampler

pytestmark = pytest.mark.unit

PARENT = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0xB7AD6B7169203331,
    True,
    TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID),
    TraceState([("vendor", "v1")]),
)
UNSAMPLED = SpanContext(0x1AF7651916CD43DD8448EB211C80319C, 0xC7AD6B7169203331, True, TraceFlags(0))

Start = Callable[[Tracing, SpanContext | None, dict[str, str | int]], trace.Span]


def _sdk(tracing: Tracing, parent: SpanContext | None, attrs: dict[str, str | int]) -> trace.Span:
    ctx = set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
    return tracing.tracer.start_span(
        "process s",
        context=ctx,
        kind=SpanKind.CONSUMER,
        attributes=attrs,
        record_exception=False,
        set_status_on_exception=False,
    )


def _lean(tracing: Tracing, parent: SpanContext | None, attrs: dict[str, str | int]) -> trace.Span:
    assert tracing.shortcut is not None
    return tracing.shortcut.start("process s", parent, SpanKind.CONSUMER, attrs)


def _handler(tracing: Tracing, fail: bool) -> None:
    """What a handler may do with the consumer span: read it, add to it, start children under it."""
    current = trace.get_current_span()
    current.set_attribute("user.list", [1, 2, 3])  # cleaned to a tuple by the SDK's rules
    current.set_attribute("user.bad", {"not": "allowed"})  # dropped, with a warning
    current.set_attributes({"user.n": 7, "user.text": "abcdefghij"})
    current.add_event("note", {"k": "v", "list": ["a", "b"]})
    current.add_link(UNSAMPLED, {"why": "batch"})
    with tracing.tracer.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
        child.set_attribute("db.system", "redis")
    if fail:
        try:
            raise ValueError("boom")
        except ValueError as exc:
            current.record_exception(exc)
            current.set_status(Status(StatusCode.ERROR, "ValueError: boom"))
            current.set_status(Status(StatusCode.UNSET))  # ignored by the SDK's rule


def _shape(span: ReadableSpan) -> dict[str, Any]:
    events = [
        (e.name, {k: v for k, v in (e.attributes or {}).items() if k != "exception.stacktrace"}, e.dropped_attributes)
        for e in span.events
    ]
    return {
        "type": "span",
        "name": span.name,
        "kind": span.kind,
        "context": span.context,
        "parent": span.parent,
        "attributes": dict(span.attributes or {}),
        "status": (span.status.status_code, span.status.description),
        "events": events,
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "resource": dict(span.resource.attributes),
        "scope": span.instrumentation_scope,
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
        "ended_after_start": (span.end_time or 0) >= (span.start_time or 1),
    }


def _run(start: Start, name: str, ratio: float, parents: list[SpanContext | None], fail: bool) -> list[Any]:
    """Every parent through ``start`` with the same random draws; the exported shapes in order (``None``
    where the sampler dropped the span, with the dropped span's context)."""
    exporter = InMemorySpanExporter()
    tracing = Tracing("sample", "worker", exporter=exporter, sampling=sampler(name, ratio))
    out: list[Any] = []
    for i, parent in enumerate(parents):
        random.seed(i)
        span = start(tracing, parent, attributes("s", "process", f"id-{i}", "g", deliveries=1 + i % 3))
        token = otel_context.attach(set_span_in_context(span))
        try:
            if span.is_recording():
                _handler(tracing, fail)
        finally:
            otel_context.detach(token)
            span.end()
        if isinstance(span, NonRecordingSpan):  # dropped by the sampler: its context still goes on
            out.append(("dropped", span.get_span_context()))
    tracing.shutdown()
    by_span = sorted(exporter.get_finished_spans(), key=lambda s: (s.start_time or 0, s.name))
    return out + [_shape(s) for s in by_span]


def _parents(n: int) -> list[SpanContext | None]:
    rng = random.Random(11)
    found: list[SpanContext | None] = []
    for i in range(n):
        if i % 4 == 0:
            found.append(None)
            continue
        flags = TraceFlags((TraceFlags.SAMPLED if i % 2 else 0) | (TraceFlags.RANDOM_TRACE_ID if i % 3 else 0))
        state = TraceState([("vendor", f"v{i}")]) if i % 5 == 0 else None
        found.append(SpanContext(rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, True, flags, state))
    return found


@pytest.mark.parametrize(
    ("name", "ratio"),
    [
        ("parentbased_always_on", 1.0),
        ("parentbased_traceidratio", 0.1),
        ("parentbased_traceidratio", 0.5),
        ("traceidratio", 0.5),
        ("always_off", 1.0),
    ],
)
@pytest.mark.parametrize("fail", [False, True])
def test_recorded_spans_export_what_the_sdk_would(name: str, ratio: float, fail: bool) -> None:
    parents = _parents(60)
    sdk = _run(_sdk, name, ratio, parents, fail)
    lean = _run(_lean, name, ratio, parents, fail)
    assert lean == sdk
    consumers = [s for s in lean if isinstance(s, dict) and s["kind"] is SpanKind.CONSUMER]
    if name != "always_off":
        assert consumers, "some consumer spans are recorded"
    for shape in consumers:
        assert shape["context"].trace_flags.sampled
        if shape["parent"] is not None:
            assert shape["context"].trace_id == shape["parent"].trace_id
    children = [s for s in lean if isinstance(s, dict) and s["name"] == "child"]
    assert sorted(c["parent"].span_id for c in children) == sorted(c["context"].span_id for c in consumers)


def test_span_limits_apply_as_in_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """With limits lower than the bus's own attributes, the lean span bounds them from the start."""
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3")
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
    parents = [None, PARENT, None]
    sdk = _run(_sdk, "parentbased_always_on", 1.0, parents, True)
    lean = _run(_lean, "parentbased_always_on", 1.0, parents, True)
    assert lean == sdk
    consumer = next(s for s in lean if isinstance(s, dict) and s["kind"] is SpanKind.CONSUMER)
    assert len(consumer["attributes"]) == 3
    assert consumer["dropped"][0] > 0
    assert consumer["dropped"][1] == 1


def test_an_ended_span_no_longer_changes() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing("sample", "worker", exporter=exporter)
    assert tracing.shortcut is not None
    span = tracing.shortcut.start("process s", PARENT, SpanKind.CONSUMER, attributes("s", "process", "e1", "g"))
    assert isinstance(span, RecordedSpan)
    assert span.is_recording()
    span.end()
    span.set_attribute("late", 1)
    span.add_event("late")
    span.set_status(Status(StatusCode.ERROR, "late"))
    span.update_name("late")
    span.end()
    tracing.shutdown()
    (exported,) = exporter.get_finished_spans()
    assert exported.name == "process s"
    assert "late" not in (exported.attributes or {})
    assert exported.status.status_code is StatusCode.UNSET
    assert not exported.events
    assert not span.is_recording()


class _Watching(SpanProcessor):
    """A span processor of the application's own: what it sees at a span's start, ending and end."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        parent = trace.get_current_span(parent_context).get_span_context() if parent_context is not None else None
        self.seen.append(("start", span.name, span.get_span_context(), parent))

    def _on_ending(self, span: Any) -> None:
        self.seen.append(("ending", span.name, span.is_recording()))

    def on_end(self, span: ReadableSpan) -> None:
        self.seen.append(("end", span.name, span.context, span.end_time is not None))


def test_a_processor_added_later_is_called_as_the_sdk_calls_it() -> None:
    """Spans started after a processor is added reach it (its start with the parent's context, its ending, its
    end, in the SDK's order), the exporter's processor still receiving every span; the same for both paths."""
    seen: dict[Start, list[Any]] = {}
    for path in (_sdk, _lean):
        exporter = InMemorySpanExporter()
        tracing = Tracing("sample", "worker", exporter=exporter)
        random.seed(3)
        first = path(tracing, PARENT, attributes("s", "process", "e0", "g"))  # the processors as they were
        first.end()
        running = path(tracing, None, attributes("s", "process", "e1", "g"))  # ends after the processor is added
        watching = _Watching()
        tracing.provider.add_span_processor(watching)
        running.end()
        for parent in (PARENT, None):
            path(tracing, parent, attributes("s", "process", "e2", "g")).end()
        tracing.shutdown()
        assert len(exporter.get_finished_spans()) == 4
        seen[path] = watching.seen
    assert seen[_lean] == seen[_sdk]
    assert [s[0] for s in seen[_lean]] == ["ending", "end"] + ["start", "ending", "end"] * 2
    assert seen[_lean][2][3] == PARENT
    assert seen[_lean][5][3] is None


def test_attach_span_makes_the_span_current_until_detached() -> None:
    """``attach_span``/``detach_span`` do what ``context.attach(set_span_in_context(span))`` and
    ``context.detach`` do: the span is current, the other values of the context stay, and the context before
    is back after."""
    tracing = Tracing("sample", "worker", exporter=InMemorySpanExporter())
    assert tracing.shortcut is not None
    outer = otel_context.attach(otel_context.set_value("other", "kept"))
    try:
        before = otel_context.get_current()
        span = tracing.shortcut.start("process s", PARENT, SpanKind.CONSUMER, attributes("s", "process", "e1", "g"))
        token = attach_span(span)
        assert trace.get_current_span() is span
        assert otel_context.get_value("other") == "kept"
        assert otel_context.get_current() == set_span_in_context(span, before)
        with tracing.tracer.start_as_current_span("child") as child:
            assert isinstance(child, ReadableSpan)
            assert child.parent == span.get_span_context()
        detach_span(token)
        assert otel_context.get_current() is before
        span.end()
    finally:
        otel_context.detach(outer)
    tracing.shutdown()
