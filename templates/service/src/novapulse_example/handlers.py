"""Events the example service reacts to: one table from event type to handler (the worker root gives it to
``rt.bus.consumer(handlers=...)``, the consumer group named after the service)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from novapulse_runtime.bus import Event
from novapulse_runtime.catalog.auth import UserRegistered

from .repository import Repository

Handler = Callable[[Event], Awaitable[None]]


def handlers(repo: Repository) -> dict[str, Handler]:
    """Event type → handler. Handlers are idempotent (the bus delivers at least once)."""

    async def on_user_registered(event: Event) -> None:
        data = event.data_as(UserRegistered)
        await repo.upsert_member(data.org_id, data.user_id, data.email)

    return {"user.registered": on_user_registered}
