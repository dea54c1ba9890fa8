"""Prometheus metrics of the worker: the :class:`~.ports.Observer` the notifier reports outcomes to."""

from __future__ import annotations

from novapulse_runtime.runtime import Runtime


class MetricsObserver:
    """Prometheus counters of deliveries (by channel and outcome) and SMTP attempts (by relay and outcome)."""

    def __init__(self, rt: Runtime) -> None:
        self.deliveries = rt.metrics.counter(
            "novapulse_notification_deliveries_total",
            "Deliveries handled, by channel and resulting state (duplicate: already settled)",
            ("channel", "outcome"),
        )
        self.attempts = rt.metrics.counter(
            "novapulse_notification_smtp_attempts_total", "SMTP attempts by relay and outcome", ("relay", "outcome")
        )

    def delivery(self, channel: str, outcome: str) -> None:
        self.deliveries.labels(channel, outcome).inc()

    def attempt(self, relay: str, outcome: str) -> None:
        self.attempts.labels(relay, outcome).inc()
