"""The bus as a service layer sees it: small protocols its use cases depend on, so unit tests can pass fakes
(integration tests use the real :class:`~novapulse_runtime.bus.outbox.Outbox`)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from ..catalog import EventData


class OutboxPort(Protocol):
    """Where a service layer records the events of a state change; the service's ``rt.bus.outbox()``
    relays them to ``<namespace>:events:<service>`` (transactional outbox, docs/events.md §5)."""

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A MongoDB transaction (yields its session, or ``None`` where transactions are unavailable)."""
        ...

    async def add(
        self,
        type_: str,
        data: EventData,
        *,
        org_id: str | None = None,
        subject: str | None = None,
        session: Any = None,
        event_id: str | None = None,
    ) -> Any:
        """Record event ``type_`` with ``data`` (a catalogue model), inside ``session`` when given; ``event_id``
        (default: a fresh UUIDv7) for an event a producer may write again after a crash (the outbox refuses a
        second record of a waiting id with pymongo's ``DuplicateKeyError``).

        :raises ValueError: ``type_`` is not this service's catalogue type.
        :raises TypeError: ``data`` is not the type's model (a pydantic ``ValidationError`` for a dict that
            does not fit it).
        """
        ...
