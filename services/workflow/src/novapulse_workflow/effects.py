"""The outbox as the engine's :class:`~.ports.Effects`."""

from __future__ import annotations

import contextlib
from typing import Any

from pymongo.errors import BulkWriteError, DuplicateKeyError

from novapulse_runtime.bus import Outbox
from novapulse_runtime.bus.envelope import build

from .ports import Publication

DUPLICATE_KEY = 11000


class OutboxEffects:
    """Writes each effect to the service's outbox with the derived event id. A record with that id still
    waiting in the outbox means the effect is on its way already (an attempt redone after a crash): the
    duplicate key is success."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def publish(self, type_: str, data: dict[str, Any], *, org_id: str, subject: str, event_id: str) -> None:
        with contextlib.suppress(DuplicateKeyError):
            await self.outbox.add(type_, data, org_id=org_id, subject=subject, key=subject, event_id=event_id)

    async def publish_many(self, events: list[Publication]) -> None:
        """One outbox insert for ``events`` (all of one run: its id is their aggregate key). When one of them
        is in the outbox already (a redo after a crash), they are added one by one, duplicates skipped."""
        if not events:
            return
        built = [
            build(
                p.type, p.data, source=self.outbox.rt.service, org_id=p.org_id, subject=p.subject, event_id=p.event_id
            )
            for p in events
        ]
        try:
            await self.outbox.add_many(built, key=events[0].subject)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
            for p in events:
                await self.publish(p.type, p.data, org_id=p.org_id, subject=p.subject, event_id=p.event_id)
