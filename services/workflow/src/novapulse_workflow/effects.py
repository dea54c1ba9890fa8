"""The outbox as the engine's :class:`~.ports.Effects`."""

from __future__ import annotations

import contextlib
from typing import Any

from pymongo.errors import DuplicateKeyError

from novapulse_runtime.bus import Outbox


class OutboxEffects:
    """Writes each effect to the service's outbox with the derived event id. A record with that id still
    waiting in the outbox means the effect is on its way already (an attempt redone after a crash): the
    duplicate key is success."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def publish(self, type_: str, data: dict[str, Any], *, org_id: str, subject: str, event_id: str) -> None:
        with contextlib.suppress(DuplicateKeyError):
            await self.outbox.add(type_, data, org_id=org_id, subject=subject, key=subject, event_id=event_id)
