"""Prometheus metrics: one registry per process, HTTP metrics by route template, room for services' own."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The process's metric registry. Services add their own with :meth:`counter`, :meth:`gauge` and
    :meth:`histogram`; every name is prefixed ``novapulse_``."""

    def __init__(self, service: str, role: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.service = service
        self.role = role
        info = Gauge(
            "novapulse_process_info", "Service and role of this process", ["service", "role"], registry=self.registry
        )
        info.labels(service, role).set(1)
        self.http_requests = Counter(
            "novapulse_http_requests_total",
            "HTTP requests served",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "novapulse_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_in_flight = Gauge(
            "novapulse_http_requests_in_flight", "HTTP requests being served", registry=self.registry
        )
        self.http_dependency_unavailable = Counter(
            "novapulse_http_dependency_unavailable_total",
            "Requests answered 503 because a dependency (MongoDB, Redis) was unreachable",
            ["dependency"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "novapulse_rate_limit_rejected_total",
            "Requests refused by a rate limit",
            ["limit"],
            registry=self.registry,
        )
        self.rate_limit_fail_open = Counter(
            "novapulse_rate_limit_fail_open_total",
            "Rate-limit checks let through because Redis failed",
            ["limit"],
            registry=self.registry,
        )
        self.health_status = Gauge(
            "novapulse_health_check_up",
            "1 when the last health check of a dependency passed",
            ["check"],
            registry=self.registry,
        )

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, list(labels), registry=self.registry)

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, list(labels), registry=self.registry)

    def histogram(
        self, name: str, doc: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = LATENCY_BUCKETS
    ) -> Histogram:
        return Histogram(name, doc, list(labels), buckets=buckets, registry=self.registry)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
