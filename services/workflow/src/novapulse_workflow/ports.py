"""What the workflow service layer calls outside, as small Protocols (unit tests use fakes)."""

from __future__ import annotations

from typing import Any, Protocol


class Effects(Protocol):
    """Publishes the events a run causes, each with the id the engine derived for it."""

    async def publish(self, type_: str, data: dict[str, Any], *, org_id: str, subject: str, event_id: str) -> None:
        """Publish one event (through the outbox). Publishing the same ``event_id`` twice must be harmless:
        consumers dedupe by id. Raises ``ValueError``/``ValidationError`` for data that does not fit the
        catalogue type."""
        ...
