"""Trace sampling (``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``): parent-based samplers follow the
caller's sampled flag and decide only for new traces; unrecorded spans still carry the context."""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState, set_span_in_context

from novapulse_runtime.settings import ServiceSettings
from novapulse_runtime.tracing import Tracing, sampler

pytestmark = pytest.mark.unit

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C


def _parent(sampled: bool) -> object:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return set_span_in_context(NonRecordingSpan(SpanContext(TRACE_ID, 0xB7AD6B7169203331, True, flags)))


def _recorded(name: str, ratio: float) -> dict[str, bool]:
    exporter = InMemorySpanExporter()
    tracing = Tracing("sample", "worker", exporter=exporter, sampling=sampler(name, ratio))
    tracer = tracing.tracer
    out = {}
    for label, ctx in (("root", None), ("sampled parent", _parent(True)), ("unsampled parent", _parent(False))):
        with tracer.start_as_current_span(label, context=ctx) as span:  # type: ignore[arg-type]
            out[label] = span.is_recording()
            if ctx is not None:  # the context goes on whether or not the span is recorded
                assert span.get_span_context().trace_id == TRACE_ID
    tracing.shutdown()
    exported = {s.name for s in exporter.get_finished_spans()}
    assert exported == {label for label, recorded in out.items() if recorded}
    return out


def test_parent_based_ratio_zero_records_only_sampled_callers() -> None:
    assert _recorded("parentbased_traceidratio", 0.0) == {
        "root": False,
        "sampled parent": True,
        "unsampled parent": False,
    }


def test_parent_based_always_on_is_the_default() -> None:
    assert _recorded("parentbased_always_on", 1.0) == {
        "root": True,
        "sampled parent": True,
        "unsampled parent": False,
    }
    settings = ServiceSettings(redis_url="redis://127.0.0.1:1/0", mongo_url="mongodb://127.0.0.1:1")
    assert (settings.otel_traces_sampler, settings.otel_traces_sampler_arg) == ("parentbased_always_on", 1.0)


def test_ratio_without_parent_ignores_the_caller() -> None:
    assert _recorded("traceidratio", 0.0) == {"root": False, "sampled parent": False, "unsampled parent": False}
    assert _recorded("always_on", 0.0) == {"root": True, "sampled parent": True, "unsampled parent": True}


def test_settings_pass_the_sampler_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    settings = ServiceSettings(redis_url="redis://127.0.0.1:1/0", mongo_url="mongodb://127.0.0.1:1")
    assert settings.otel_traces_sampler == "parentbased_traceidratio"
    assert settings.otel_traces_sampler_arg == 0.25
    description = sampler(settings.otel_traces_sampler, settings.otel_traces_sampler_arg).get_description()
    assert "0.25" in description


@pytest.mark.parametrize(("name", "ratio"), [("sometimes", 1.0), ("traceidratio", 1.5), ("traceidratio", -0.1)])
def test_bad_sampler_is_refused(name: str, ratio: float) -> None:
    with pytest.raises(ValueError, match="sampler"):
        sampler(name, ratio)


def _sdk_span(tracing: Tracing, parent: SpanContext | None) -> Any:
    ctx = set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
    return tracing.tracer.start_span("process", context=ctx)


@pytest.mark.parametrize(
    ("name", "ratio"),
    [
        ("parentbased_traceidratio", 0.1),
        ("parentbased_traceidratio", 0.5),
        ("parentbased_always_on", 1.0),
        ("parentbased_always_off", 1.0),
        ("traceidratio", 0.5),
        ("always_off", 1.0),
    ],
)
def test_the_sampling_shortcut_decides_and_builds_what_the_sdk_would(name: str, ratio: float) -> None:
    """The consumer's cheap path for dropped spans (``SamplingShortcut``) against the SDK's own
    ``start_span``, parent by parent: same decision, same non-recording span context but for the new span id;
    a new trace it samples is recorded by the SDK with the very trace id it drew."""
    tracing = Tracing("sample", "worker", exporter=InMemorySpanExporter(), sampling=sampler(name, ratio))
    shortcut = tracing.shortcut
    assert shortcut is not None
    rng = random.Random(7)
    dropped_roots = 0
    for i in range(1000):
        flags = TraceFlags((TraceFlags.SAMPLED if i % 2 else 0) | (TraceFlags.RANDOM_TRACE_ID if i % 3 else 0))
        state = TraceState([("vendor", f"v{i}")]) if i % 5 == 0 else None
        parent = (
            None if i % 4 == 0 else SpanContext(rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, True, flags, state)
        )
        dropped = shortcut.dropped(parent)
        if dropped is None:  # to be recorded: the SDK must agree, on the trace id drawn for a new trace
            primed = shortcut.ids.next_trace_id
            span = _sdk_span(tracing, parent)
            shortcut.ids.next_trace_id = 0
            assert span.is_recording()
            if parent is not None:
                assert span.get_span_context().trace_id == parent.trace_id
            elif primed:
                assert span.get_span_context().trace_id == primed
            else:  # every new trace sampled: nothing to draw beforehand
                assert shortcut.root_bound == 1 << 64
            continue
        if parent is None:
            dropped_roots += 1
            assert dropped.trace_id & ((1 << 64) - 1) >= shortcut.root_bound
        else:  # the SDK decides from the parent's sampled flag or trace id: ask it for the same parent
            sdk = _sdk_span(tracing, parent).get_span_context()
            assert not _sdk_span(tracing, parent).is_recording()
            assert (dropped.trace_id, dropped.trace_flags, dropped.trace_state, dropped.is_remote) == (
                sdk.trace_id,
                sdk.trace_flags,
                sdk.trace_state,
                sdk.is_remote,
            )
            assert dropped.span_id not in (0, parent.span_id)
    roots = 250
    if name in ("parentbased_traceidratio", "traceidratio"):  # about 1 - ratio of the new traces dropped
        assert abs(dropped_roots / roots - (1 - ratio)) < 0.15
    tracing.shutdown()


def test_no_shortcut_for_a_sampler_it_does_not_know() -> None:
    custom = ParentBased(ALWAYS_OFF, remote_parent_not_sampled=ALWAYS_ON)
    assert Tracing("sample", "worker", sampling=custom).shortcut is None
