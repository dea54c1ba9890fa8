"""The event port: how the auth service records events together with the state change that caused them.

The shape is the shared bus's outbox (``EventBus(rt).outbox()``, wired in the composition root):
``transaction()`` yields a MongoDB session (or ``None``), ``add()`` records an event inside it.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
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
