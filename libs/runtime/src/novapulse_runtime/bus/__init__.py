"""The event bus: Redis Streams with consumer groups, a transactional outbox, dead letters and replay.

::

    bus = EventBus(rt)
    outbox = bus.outbox()
    async with outbox.transaction() as session:
        await users.insert_one(doc, session=session)
        await outbox.add("user.registered", UserRegistered(...), org_id=org, subject=user_id, session=session)

    consumer = bus.consumer()

    @consumer.on("user.registered")
    async def on_registered(event: Event) -> None: ...

    composition.workers += [outbox.relay, consumer.run]
    composition.routes.extend(bus.routes("/api/v1/<service>"))

The contract (envelope fields, stream names, dead letters, idempotency) is in ``docs/events.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.trace import Tracer
from pydantic import BaseModel

from ..routes import Routes
from ..runtime import Runtime
from .constants import DEFAULT_DEAD_MAXLEN, DEFAULT_STREAM_MAXLEN
from .consumer import Consumer, ConsumerOptions, Handler
from .envelope import (
    DeadReason,
    Event,
    MalformedEntry,
    PermanentError,
    build,
    decode,
    derived_event_id,
    encode,
    new_event_id,
    with_trace,
)
from .idempotency import Claim, Idempotency
from .keys import Keys
from .metrics import BusMetrics
from .operations import DeadLetter, Operations, StreamStats, build_routes
from .outbox import Outbox
from .publisher import Publisher

__all__ = [
    "Claim",
    "Consumer",
    "ConsumerOptions",
    "DeadLetter",
    "DeadReason",
    "Event",
    "EventBus",
    "Handler",
    "Idempotency",
    "Keys",
    "MalformedEntry",
    "Outbox",
    "PermanentError",
    "StreamStats",
    "decode",
    "derived_event_id",
    "encode",
    "new_event_id",
]


class EventBus:
    """The bus of one process, built from its :class:`~novapulse_runtime.runtime.Runtime`.

    ``namespace`` prefixes every stream and key (default: the runtime's ``EVENTS_NAMESPACE`` setting,
    ``rt.settings.events_namespace``; in-process tests pass a unique one). ``tracing=False`` skips
    producer/consumer spans (``traceparent`` is then not written). With tracing on and no span exporter
    configured, the bus propagates the trace context (``traceparent`` is written, handlers run in the
    producer's trace) without recording spans nobody would receive.
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        namespace: str | None = None,
        tracing: bool = True,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
        dead_maxlen: int = DEFAULT_DEAD_MAXLEN,
    ) -> None:
        self.rt = rt
        self.keys = Keys(namespace or rt.settings.events_namespace)
        self.metrics = BusMetrics.of(rt.metrics)
        self.tracer: Tracer | None = rt.tracer if tracing else None
        self.dead_maxlen = dead_maxlen
        self.publisher = Publisher(rt.redis, self.metrics, self.tracer, stream_maxlen, rt.tracing.provider)
        self.operations = Operations(self)
        self.consumers: list[Consumer] = []
        self._outbox: Outbox | None = None

    def stream(self, source: str | None = None) -> str:
        """The stream of ``source`` (default: this service's own stream)."""
        return self.keys.stream(source or self.rt.service)

    def outbox(self) -> Outbox:
        """This service's outbox (one per bus); run ``outbox.relay`` as a worker."""
        if self._outbox is None:
            self._outbox = Outbox(self)
        return self._outbox

    def consumer(
        self,
        group: str | None = None,
        *,
        sources: Sequence[str] = (),
        options: ConsumerOptions | None = None,
        handlers: Mapping[str, Handler] | None = None,
        **overrides: Any,
    ) -> Consumer:
        """A consumer for ``group`` (default: this service). ``sources`` adds producing services' streams to
        those derived from the handled types; ``handlers`` is the service's table from event type (or
        pattern, see :meth:`Consumer.on`) to handler; ``overrides`` are :class:`ConsumerOptions` fields.

        :raises ValueError: a handled type is not in the catalogue.
        """
        opts = options or ConsumerOptions()
        if overrides:
            from dataclasses import replace

            opts = replace(opts, **overrides)
        consumer = Consumer(self, group or self.rt.service, sources, opts)
        for pattern, handler in (handlers or {}).items():
            consumer.add_handler(pattern, handler)
        self.consumers.append(consumer)
        return consumer

    def event(
        self,
        type_: str,
        data: BaseModel | dict[str, Any],
        *,
        org_id: str | None = None,
        subject: str | None = None,
    ) -> Event:
        """Build (and validate) an event from this service without publishing it."""
        return build(type_, data, source=self.rt.service, org_id=org_id, subject=subject)

    async def publish(
        self,
        type_: str,
        data: BaseModel | dict[str, Any],
        *,
        org_id: str | None = None,
        subject: str | None = None,
    ) -> Event:
        """Publish one event straight to this service's stream (no outbox: for producers without a database;
        an event is lost if the process dies before this returns)."""
        event = self.event(type_, data, org_id=org_id, subject=subject)
        stream = self.stream()
        fields = self.publisher.fields_for(event, stream, "send")
        await self.publisher.add_entries(stream, [(event.type, fields)])
        return with_trace(event, fields)

    async def publish_events(self, events: Sequence[Event]) -> list[str]:
        """Publish events built with :meth:`event`, in order, in one pipeline; returns the entry ids."""
        stream = self.stream()
        encoded = self.publisher.fields_for_many(events, stream, "send")
        entries = [(e.type, f) for e, f in zip(events, encoded, strict=True)]
        return await self.publisher.add_entries(stream, entries)

    def routes(self, prefix: str) -> Routes:
        """Operations routes under ``prefix`` (e.g. ``/api/v1/auth``): ``GET events/streams``,
        ``GET events/dead-letters``, ``POST events/dead-letters/{entry_id}/replay``,
        ``POST events/dead-letters/replay``. They see every organisation's events, so they open only to
        the platform operator's ``OPERATIONS_TOKEN`` (404 while it is unset), never to a tenant token."""
        return build_routes(self, prefix)
