"""Prometheus metrics of the report worker: the :class:`~.ports.Observer` generation and retention report
to."""

from __future__ import annotations

from novapulse_runtime.metrics import Metrics

DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""Seconds: a report takes from a fraction of a second to an hour."""


class MetricsObserver:
    """``novapulse_report_runs_total{type,format,outcome}``, ``novapulse_report_rows_total{format}`` (rows/s is
    its rate), ``novapulse_report_generation_duration_seconds{format}`` (claim to end of a run that
    succeeded), ``novapulse_report_queue_age_seconds`` (request to first claim),
    ``novapulse_report_bytes_stored`` (bytes of finished files kept, set by the retention job) and
    ``novapulse_report_expired_total``."""

    def __init__(self, metrics: Metrics) -> None:
        self.runs = metrics.counter(
            "novapulse_report_runs_total",
            "Report runs by type, format and outcome (succeeded, failed, released, lost)",
            ("type", "format", "outcome"),
        )
        self.rows = metrics.counter("novapulse_report_rows_total", "Rows written into report parts", ("format",))
        self.duration = metrics.histogram(
            "novapulse_report_generation_duration_seconds",
            "Seconds from claim to the end of a run that succeeded",
            ("format",),
            buckets=DURATION_BUCKETS,
        )
        self.queue_age = metrics.histogram(
            "novapulse_report_queue_age_seconds",
            "Seconds a report waited between its request and its first claim",
            buckets=DURATION_BUCKETS,
        )
        self.stored = metrics.gauge("novapulse_report_bytes_stored", "Bytes of finished report files kept")
        self.expired = metrics.counter("novapulse_report_expired_total", "Reports whose file expired and was deleted")

    def run(self, type_: str, format_: str, outcome: str, seconds: float) -> None:
        self.runs.labels(type_, format_, outcome).inc()
        if outcome == "succeeded":
            self.duration.labels(format_).observe(seconds)

    def claimed(self, waited_seconds: float, first: bool) -> None:
        if first:
            self.queue_age.observe(waited_seconds)

    def rows_written(self, format_: str, count: int) -> None:
        self.rows.labels(format_).inc(count)

    def retention(self, expired: int, bytes_stored: int) -> None:
        self.expired.inc(expired)
        self.stored.set(bytes_stored)


class NullObserver:
    """Records nothing (unit tests, the benchmark)."""

    def run(self, type_: str, format_: str, outcome: str, seconds: float) -> None:
        return None

    def claimed(self, waited_seconds: float, first: bool) -> None:
        return None

    def rows_written(self, format_: str, count: int) -> None:
        return None

    def retention(self, expired: int, bytes_stored: int) -> None:
        return None
