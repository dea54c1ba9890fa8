"""Fakes of the auth service's ports (:mod:`novapulse_auth.ports`) for unit tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from novapulse_runtime.catalog import EventData


@dataclass
class RecordedEvent:
    type: str
    data: EventData
    org_id: str
    subject: str


@dataclass
class RecordingOutbox:
    """An in-memory :class:`novapulse_auth.ports.Outbox`."""

    events: list[RecordedEvent] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield None

    async def add(
        self,
        type_: str,
        data: EventData,
        *,
        org_id: str | None = None,
        subject: str | None = None,
        session: Any = None,
        event_id: str | None = None,
    ) -> None:
        self.events.append(RecordedEvent(type_, data, org_id or "", subject or ""))

    def types(self) -> list[str]:
        return [e.type for e in self.events]
