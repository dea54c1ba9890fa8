"""Prometheus metrics of the bus, registered once per process registry."""

from __future__ import annotations

import weakref

from prometheus_client import Counter, Gauge, Histogram

from ..metrics import Metrics
from .envelope import lookup

HANDLER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

OTHER_TYPE = "other"


def type_label(type_: str) -> str:
    """The ``type`` label of an event type: catalogue types by name, anything else as ``other`` (types outside
    the catalogue come from callers and outside producers; as labels they would be unbounded)."""
    return type_ if lookup(type_) is not None else OTHER_TYPE


_by_registry: weakref.WeakKeyDictionary[Metrics, BusMetrics] = weakref.WeakKeyDictionary()


class BusMetrics:
    """Counters by stream, group and type; handler duration; pending, lag and outbox gauges."""

    def __init__(self, m: Metrics) -> None:
        self.published: Counter = m.counter(
            "novapulse_events_published_total", "Events written to a stream", ("stream", "type")
        )
        self.consumed: Counter = m.counter(
            "novapulse_events_consumed_total", "Events handled successfully", ("stream", "group", "type")
        )
        self.failed: Counter = m.counter(
            "novapulse_events_failed_total", "Handler attempts that raised or timed out", ("stream", "group", "type")
        )
        self.retried: Counter = m.counter(
            "novapulse_events_retried_total", "Deliveries retried after a failure", ("stream", "group", "type")
        )
        self.dead_lettered: Counter = m.counter(
            "novapulse_events_dead_lettered_total",
            "Entries moved to the dead-letter stream",
            ("stream", "group", "type", "reason"),
        )
        self.duplicates: Counter = m.counter(
            "novapulse_events_duplicates_total",
            "Deliveries skipped because the event id was already handled by the group",
            ("stream", "group"),
        )
        self.reclaimed: Counter = m.counter(
            "novapulse_events_reclaimed_total", "Pending entries reclaimed from idle consumers", ("stream", "group")
        )
        self.renewed: Counter = m.counter(
            "novapulse_events_renewed_total",
            "Lease renewals of held entries (one per entry per renewal pass)",
            ("stream", "group"),
        )
        self.handler_duration: Histogram = m.histogram(
            "novapulse_event_handler_duration_seconds",
            "Time spent in event handlers",
            ("group", "type"),
            buckets=HANDLER_BUCKETS,
        )
        self.pending: Gauge = m.gauge(
            "novapulse_events_pending", "Entries delivered to a group and not yet acknowledged", ("stream", "group")
        )
        self.lag: Gauge = m.gauge("novapulse_events_lag", "Entries not yet delivered to a group", ("stream", "group"))
        self.outbox_backlog: Gauge = m.gauge("novapulse_outbox_backlog", "Outbox records not yet published")
        self.outbox_age: Gauge = m.gauge(
            "novapulse_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox record"
        )

        self.outbox_unreplicated: Counter = m.counter(
            "novapulse_outbox_unreplicated_total",
            "Outbox batches kept unpublished because fewer replicas than OUTBOX_REPLICA_ACKS confirmed them (WAIT)",
        )

    @classmethod
    def of(cls, m: Metrics) -> BusMetrics:
        """The bus metrics of ``m``'s registry (created on first use)."""
        found = _by_registry.get(m)
        if found is None:
            found = _by_registry[m] = cls(m)
        return found
