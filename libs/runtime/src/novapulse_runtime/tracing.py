"""OpenTelemetry tracing: resource from SERVICE_NAME, OTLP export when configured, flushed on shutdown."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Tracer, TracerProvider
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanContext, TraceFlags

log = logging.getLogger(__name__)

_instrumented = False


def sampler(name: str = "parentbased_always_on", ratio: float = 1.0) -> Sampler:
    """The sampler named by ``OTEL_TRACES_SAMPLER`` (values of the OpenTelemetry SDK configuration
    specification) with ``ratio`` (``OTEL_TRACES_SAMPLER_ARG``, 0-1) for the ``*traceidratio`` ones.

    :raises ValueError: an unknown name or a ratio outside 0-1 (settings validate both before this).
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"sampler ratio must be 0-1, got {ratio}")
    root: Sampler
    base = name.removeprefix("parentbased_")
    if base == "always_on":
        root = ALWAYS_ON
    elif base == "always_off":
        root = ALWAYS_OFF
    elif base == "traceidratio":
        root = TraceIdRatioBased(ratio)
    else:
        raise ValueError(f"unknown sampler {name!r}")
    return ParentBased(root) if name.startswith("parentbased_") else root


class PrimedIds(RandomIdGenerator):
    """The SDK's random ids, except that the next trace id may be set beforehand (:attr:`next_trace_id`, 0:
    none): :class:`SamplingShortcut` draws a new trace's id to take the sampling decision itself, and when
    the span is to be recorded the SDK's ``start_span`` takes that very id, so its sampler decides alike."""

    def __init__(self) -> None:
        self.next_trace_id = 0

    def generate_trace_id(self) -> int:
        primed = self.next_trace_id
        if primed:
            self.next_trace_id = 0
            return primed
        return super().generate_trace_id()


_LOW_64 = (1 << 64) - 1
_ALWAYS = 1 << 64
"""A root bound every trace id is under (``ALWAYS_ON``)."""


class SamplingShortcut:
    """The decision of the process's sampler, taken without the SDK's sampling machinery, for spans it drops.

    The OpenTelemetry SDK spends ~11 µs on a span its sampler drops (sampler calls, the span context, the
    context manager); a consumer that handles thousands of events a second with the chart's 10 % sampling
    drops most of its spans. :meth:`dropped` answers for the samplers :func:`sampler` builds (their SDK
    objects with default delegates, checked by :meth:`of`) exactly as ``Tracer.start_span`` would: the same
    decision from the same trace id, and the same non-recording span context (trace id, a new span id,
    flags, the parent's trace state), so the trace goes on to the handler's own calls and events."""

    def __init__(self, root_bound: int, parent_based: bool, ids: PrimedIds) -> None:
        self.root_bound = root_bound
        """Traces whose id's low 64 bits are under this are sampled (``TraceIdRatioBased``'s rule)."""
        self.parent_based = parent_based
        self.ids = ids

    @classmethod
    def of(cls, provider: TracerProvider, tracer: Any) -> SamplingShortcut | None:
        """The shortcut for spans of ``tracer`` (from ``provider``); ``None`` unless the sampler is one
        :func:`sampler` builds, the ids come from :class:`PrimedIds` and the SDK records no span metrics of
        its own (which the shortcut would bypass)."""
        ids = getattr(tracer, "id_generator", None)
        if type(tracer) is not Tracer or not isinstance(ids, PrimedIds):
            return None
        if type(getattr(tracer, "_tracer_metrics", None)) is not NoOpTracerMetrics:
            return None
        chosen: Any = provider.sampler
        parent_based = type(chosen) is ParentBased
        if parent_based:
            defaults = (ALWAYS_ON, ALWAYS_OFF, ALWAYS_ON, ALWAYS_OFF)
            delegates = tuple(
                getattr(chosen, f"_{name}", None)
                for name in (
                    "remote_parent_sampled",
                    "remote_parent_not_sampled",
                    "local_parent_sampled",
                    "local_parent_not_sampled",
                )
            )
            if delegates != defaults:
                return None
            chosen = getattr(chosen, "_root", None)
        if chosen is ALWAYS_ON:
            bound = _ALWAYS
        elif chosen is ALWAYS_OFF:
            bound = 0
        elif type(chosen) is TraceIdRatioBased:
            bound = chosen.bound
        else:
            return None
        return cls(bound, parent_based, ids)

    def dropped(self, parent: SpanContext | None) -> SpanContext | None:
        """The context of the non-recording span the SDK would start as a child of ``parent`` (``None`` or
        invalid: a new trace) when the sampler drops it; ``None`` when the span is to be recorded (then, for
        a new trace, the drawn trace id is primed for the SDK's next ``start_span``, which must follow at
        once)."""
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            sampled = parent.trace_flags.sampled if self.parent_based else trace_id & _LOW_64 < self.root_bound
            if sampled:
                return None
            flags = TraceFlags.RANDOM_TRACE_ID if parent.trace_flags.random_trace_id else TraceFlags.DEFAULT
            state = parent.trace_state
        else:
            if self.root_bound == _ALWAYS:
                return None
            trace_id = self.ids.generate_trace_id()
            if trace_id & _LOW_64 < self.root_bound:
                self.ids.next_trace_id = trace_id
                return None
            flags = TraceFlags.RANDOM_TRACE_ID if self.ids.is_trace_id_random() else TraceFlags.DEFAULT
            state = None
        return SpanContext(
            trace_id, self.ids.generate_span_id(), is_remote=False, trace_flags=TraceFlags(flags), trace_state=state
        )


class Tracing:
    """Owns the process's tracer provider. Spans are always created (so trace ids reach the logs and
    ``traceparent`` travels); they are exported only when an exporter is configured."""

    def __init__(
        self,
        service: str,
        role: str,
        otlp_endpoint: str = "",
        exporter: SpanExporter | None = None,
        sampling: Sampler | None = None,
    ) -> None:
        resource = Resource.create({"service.name": service, "service.namespace": "novapulse", "novapulse.role": role})
        # ``sampling`` None: parent-based, always on for new traces (the OpenTelemetry default)
        # PrimedIds: the SDK's random ids, which SamplingShortcut can prime (see there)
        self.provider = TracerProvider(resource=resource, sampler=sampling or sampler(), id_generator=PrimedIds())
        if exporter is None and otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("novapulse")
        self.shortcut = SamplingShortcut.of(self.provider, self.tracer)
        """The cheap decision for spans of :attr:`tracer` its sampler drops (``None``: ask the SDK)."""

    def install(self) -> None:
        """Make this provider the global one and instrument aiohttp client, pymongo and redis."""
        global _instrumented
        trace.set_tracer_provider(self.provider)
        if _instrumented:
            return
        _instrumented = True
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
        from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        for instrumentor in (AioHttpClientInstrumentor(), PymongoInstrumentor(), RedisInstrumentor()):
            try:
                instrumentor.instrument(tracer_provider=self.provider)
            except Exception:  # an instrumentation must never stop the process
                log.warning(
                    "instrumentation failed", extra={"instrumentor": type(instrumentor).__name__}, exc_info=True
                )

    def shutdown(self) -> None:
        self.provider.force_flush(timeout_millis=5000)
        self.provider.shutdown()


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def span_attributes(**attrs: Any) -> dict[str, Any]:
    return {k.replace("__", "."): v for k, v in attrs.items() if v is not None}
