"""Ports: the outgoing dependencies the auth service layer uses, as small protocols.

:class:`Outbox` records events together with the state change that caused them. Its implementation is the
shared bus's outbox (``rt.bus.outbox()``, wired in :mod:`.bootstrap`): ``transaction()`` yields a MongoDB
session (or ``None``), ``add()`` records an event inside it. The unit-test fake lives in the tests
(``tests/fakes_auth.py``).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from novapulse_runtime.catalog import EventData


class Outbox(Protocol):
    """Where the service layer records the events of a state change (relayed to ``novapulse:events:auth``)."""

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
    ) -> Any:
        """Record event ``type_`` with ``data`` (a catalog model), inside ``session`` when given."""
        ...
