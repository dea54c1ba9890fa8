"""The event publisher of the worker: this service's announcements go out through its transactional outbox
(relayed to the bus by ``Outbox.relay``)."""

from __future__ import annotations

from novapulse_runtime.bus import Outbox
from novapulse_runtime.catalog import EventData


class OutboxPublisher:
    """:class:`~.ports.EventPublisher` over the bus outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def publish(self, event_type: str, data: EventData, *, org_id: str, subject: str) -> None:
        """Add the event to the outbox (raises what the outbox raises when MongoDB fails)."""
        await self.outbox.add(event_type, data, org_id=org_id, subject=subject)
