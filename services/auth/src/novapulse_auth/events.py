"""The event port: how the auth service records events together with the state change that caused them.

The shape is the shared bus's outbox (``EventBus(rt).outbox()``, wired in the composition root):
``transaction()`` yields a MongoDB session (or ``None``), ``add()`` records an event inside it. Unit tests use
:class:`RecordingOutbox`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from novapulse_runtime.catalog import EventData


class Outbox(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Any]: ...

    async def add(
        self,
        type_: str,
        data: EventData,
        *,
        org_id: str | None = None,
        subject: str | None = None,
        session: Any = None,
    ) -> Any: ...


@dataclass
class RecordedEvent:
    type: str
    data: EventData
    org_id: str
    subject: str


@dataclass
class RecordingOutbox:
    """An in-memory outbox for unit tests."""

    events: list[RecordedEvent] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield None

    async def add(
        self, type_: str, data: EventData, *, org_id: str | None = None, subject: str | None = None, session: Any = None
    ) -> None:
        self.events.append(RecordedEvent(type_, data, org_id or "", subject or ""))

    def types(self) -> list[str]:
        return [e.type for e in self.events]
