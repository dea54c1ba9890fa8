"""Small interfaces the delivery code depends on (fakes implement them in unit tests)."""

from __future__ import annotations

import logging
from typing import Protocol

from novapulse_runtime.catalog import EventData

log = logging.getLogger("novapulse.webhook.events")


class EventPublisher(Protocol):
    """Publishes this service's own events (``webhook.endpoint.disabled``, ``webhook.message.failed``)."""

    async def publish(self, event_type: str, data: EventData, *, org_id: str, subject: str) -> None: ...


class LogPublisher:
    """Fallback publisher that only logs (used where no event bus is wired)."""

    async def publish(self, event_type: str, data: EventData, *, org_id: str, subject: str) -> None:
        log.info("event", extra={"type": event_type, "org_id": org_id, "subject": subject})
