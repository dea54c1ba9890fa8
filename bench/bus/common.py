"""Shared pieces of the bus benchmarks: the ~200-byte payload, the bench event type, runtimes."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from novapulse_runtime.bus import EventBus
from novapulse_runtime.catalog import CATALOG, EventData, EventType
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings

SOURCE = "bench"
TYPE = "bench.noop"
NAMESPACE = "bench"
PAD = "x" * 120


class BenchPayload(EventData):
    """Benchmark payload (~200 bytes of JSON)."""

    seq: int
    sent_ns: int
    org_id: str = "org_0123456789abcdef"
    pad: str = PAD


BENCH_EVENTS = (EventType(TYPE, BenchPayload, source=SOURCE, public=False),)
"""The bench's own type: added to the catalogue by :func:`bus`, before any event is built or read."""


def payload(seq: int, sent_ns: int = 0) -> dict[str, Any]:
    return {"seq": seq, "sent_ns": sent_ns or time.time_ns(), "org_id": "org_0123456789abcdef", "pad": PAD}


class DiscardExporter(SpanExporter):
    """Receives spans from a BatchSpanProcessor and drops them: the cost of recording, not of shipping. Counts
    the spans received (:attr:`received`), so the bench shows every recorded span reached the exporter."""

    def __init__(self) -> None:
        self.received = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.received += len(spans)
        return SpanExportResult.SUCCESS


def runtime(
    redis_url: str,
    concurrency: int = 100,
    *,
    export_spans: bool = False,
    sampler: str = "parentbased_always_on",
    sampler_arg: float = 1.0,
) -> Runtime:
    settings = ServiceSettings(
        service_name=SOURCE,
        redis_url=redis_url,
        mongo_url="mongodb://127.0.0.1:9",  # never contacted: the benchmarks publish directly
        queue_concurrency=concurrency,
        log_level="WARNING",
        otel_traces_sampler=sampler,  # type: ignore[arg-type]  # checked by the settings
        otel_traces_sampler_arg=sampler_arg,
    )
    return Runtime(settings, role="worker", span_exporter=DiscardExporter() if export_spans else None)


def bus(rt: Runtime, tracing: bool = True) -> EventBus:
    CATALOG.add(*BENCH_EVENTS)
    return EventBus(rt, namespace=NAMESPACE, tracing=tracing)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "p999": float("nan")}
    values = sorted(values)

    def at(q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    return {"p50": at(0.50), "p99": at(0.99), "p999": at(0.999), "mean": statistics.fmean(values)}
