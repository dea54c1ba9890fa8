"""Trace sampling (``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``): parent-based samplers follow the
caller's sampled flag and decide only for new traces; unrecorded spans still carry the context."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

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
