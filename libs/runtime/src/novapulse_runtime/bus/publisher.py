"""Writes envelopes to streams: pipelined XADD (optionally confirmed by replicas with ``WAIT``), producer spans,
metrics and safe trimming."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.trace import SpanKind, Tracer
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .constants import TRIM_INTERVAL
from .envelope import Event, encode
from .metrics import BusMetrics, type_label
from .streams import add_batch, trim_stream
from .tracing import attributes, exports_spans, inject, inject_current

log = logging.getLogger("novapulse.bus")


class NotReplicated(RedisError):
    """``WAIT`` confirmed fewer replicas than asked: the entries are on the primary (``ids``) but a fail-over
    may lose them, so whoever wrote them must keep its copy and write them again (consumers dedupe by event
    id)."""

    def __init__(self, acked: int, wanted: int, ids: list[str]) -> None:
        super().__init__(f"{acked} of {wanted} replicas confirmed {len(ids)} entries")
        self.acked = acked
        self.wanted = wanted
        self.ids = ids


class Publisher:
    """Appends entries to streams and trims them (at most every ``TRIM_INTERVAL`` seconds per stream)."""

    def __init__(
        self, redis: Redis, metrics: BusMetrics, tracer: Tracer | None, maxlen: int, provider: Any = None
    ) -> None:
        self.redis = redis
        self.provider = provider
        self.metrics = metrics
        self.tracer = tracer
        self.maxlen = maxlen
        self.trim_interval = TRIM_INTERVAL
        self._trimmed_at: dict[str, float] = {}

    def fields_for(self, event: Event, stream: str, operation: str) -> dict[str, str]:
        """Encode ``event``, opening a producer span whose context travels in ``traceparent``."""
        return self.fields_for_many([event], stream, operation)[0]

    def fields_for_many(self, events: Sequence[Event], stream: str, operation: str) -> list[dict[str, str]]:
        """Encode events under one producer span: per event for one, a batch span (``messaging.batch.
        message_count``) shared by all for several."""
        if self.tracer is None or not events:
            return [encode(e) for e in events]
        if not exports_spans(self.provider):  # nothing records spans: just carry the caller's context
            traceparent, tracestate = inject_current()
            return [encode(e, traceparent, tracestate) for e in events]
        single = len(events) == 1
        with self.tracer.start_as_current_span(
            f"{operation} {stream}",
            kind=SpanKind.PRODUCER,
            attributes=attributes(
                stream, operation, events[0].id if single else None, batch=0 if single else len(events)
            ),
        ) as span:
            traceparent, tracestate = inject(span)
            return [encode(e, traceparent, tracestate) for e in events]

    async def add_entries(
        self,
        stream: str,
        entries: Sequence[tuple[str, dict[str, str]]],
        *,
        replicas: int = 0,
        replica_timeout_ms: int = 1000,
    ) -> list[str]:
        """XADD ``(type, fields)`` entries in order, in one pipeline (:func:`~.streams.add_batch`); returns the
        entry ids.

        With ``replicas`` > 0 the pipeline ends with ``WAIT replicas replica_timeout_ms`` (on the same
        connection as the XADDs, so it covers them): fewer confirmations within the timeout raise
        :class:`NotReplicated` (the entries stay in the stream; the caller must not count them as safe).
        ``replica_timeout_ms`` must stay below the client's socket timeout (5 s).
        """
        if not entries:
            return []
        ids, acked = await add_batch(
            self.redis,
            stream,
            [fields for _type, fields in entries],
            wait=(replicas, replica_timeout_ms) if replicas > 0 else None,
        )
        if acked is not None and acked < replicas:
            raise NotReplicated(acked, replicas, ids)
        counts: dict[str, int] = {}
        for type_, _ in entries:
            label = type_label(type_)
            counts[label] = counts.get(label, 0) + 1
        for type_, n in counts.items():
            self.metrics.published.labels(stream, type_).inc(n)
        await self.maybe_trim(stream)
        return ids

    async def maybe_trim(self, stream: str) -> None:
        now = time.monotonic()
        if self.trim_interval and now - self._trimmed_at.get(stream, -1e9) < self.trim_interval:
            return
        self._trimmed_at[stream] = now
        try:
            removed = await trim_stream(self.redis, stream, self.maxlen)
        except RedisError as exc:
            log.warning("stream trim failed", extra={"stream": stream, "error": str(exc)})
            return
        except Exception as exc:  # trimming is best effort: it must never fail a publish that succeeded
            log.error("stream trim failed unexpectedly", exc_info=exc, extra={"stream": stream})
            return
        if removed:
            log.debug("trimmed stream", extra={"stream": stream, "removed": removed})
