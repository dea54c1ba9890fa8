"""Small interfaces of the service's outgoing dependencies (fakes implement them in unit tests)."""

from __future__ import annotations

from typing import Protocol

from novapulse_runtime.catalog import EventData


class EventPublisher(Protocol):
    """Publishes this service's own events (``webhook.endpoint.disabled``, ``webhook.message.failed``)."""

    async def publish(self, event_type: str, data: EventData, *, org_id: str, subject: str) -> None:
        """Publish ``data`` as an event of ``event_type`` for ``org_id`` about ``subject`` (an id)."""
        ...
