"""Events the workflow service reacts to: every type of every domain stream (``*``), for triggers and
waits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from novapulse_runtime.bus import Event

from .triggers import Triggers

Handler = Callable[[Event], Awaitable[None]]


def event_doc(event: Event) -> dict[str, Any]:
    """An event as expressions and the journal see it: ``{id, type, source, time, org_id, subject, data}``
    (``time`` RFC 3339)."""
    data = event.data.model_dump(mode="json") if isinstance(event.data, BaseModel) else event.data
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "time": event.time.isoformat(),
        "org_id": event.org_id,
        "subject": event.subject,
        "data": data,
    }


def handlers(triggers: Triggers) -> dict[str, Handler]:
    """Event type pattern → handler. Idempotent (the bus delivers at least once)."""

    async def on_any(event: Event) -> None:
        await triggers.on_event(event_doc(event))

    return {"*": on_any}
