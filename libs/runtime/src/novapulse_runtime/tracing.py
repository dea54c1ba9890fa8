"""OpenTelemetry tracing: resource from SERVICE_NAME, OTLP export when configured, flushed on shutdown."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

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
        self.provider = TracerProvider(resource=resource, sampler=sampling or sampler())
        if exporter is None and otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("novapulse")

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
