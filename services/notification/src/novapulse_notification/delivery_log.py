"""Use case of the delivery log: an organisation's deliveries, newest first, each with its logged attempts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from novapulse_runtime.documents import Doc
from novapulse_runtime.paging import PageQuery, page

from .constants import Category, Channel, DeliveryState
from .repository import Repository


@dataclass(frozen=True)
class DeliveryFilter:
    """Which deliveries to show; ``None`` matches any. ``email`` matches case-insensitively."""

    state: DeliveryState | None = None
    channel: Channel | None = None
    category: Category | None = None
    event_type: str | None = None
    event_id: str | None = None
    user_id: str | None = None
    email: str | None = None

    def fields(self) -> dict[str, Any]:
        """The filter as delivery fields and the values they must equal."""
        out: dict[str, Any] = {}
        for name in ("state", "channel", "category", "event_type", "event_id", "user_id"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.value if hasattr(value, "value") else value
        if self.email is not None:
            out["email"] = self.email.lower()
        return out


@dataclass(frozen=True)
class DeliveryPage:
    """One page of deliveries (stored documents, newest first) with their attempts (oldest first, at most
    ``MAX_ATTEMPTS_LOGGED`` each) and the opaque cursor of the next page (``None`` on the last page)."""

    items: list[tuple[Doc, list[Doc]]]
    next_cursor: str | None


class DeliveryLog:
    """What was sent to whom, and how each attempt went (shown to an organisation's owners and admins)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def page(self, org_id: str, query: PageQuery, where: DeliveryFilter) -> DeliveryPage:
        """The page of the organisation's deliveries matching ``where`` after ``query.cursor``
        (``query.limit`` at most), cut by the one paging rule of :func:`novapulse_runtime.paging.page`."""
        docs = await self.repo.list_deliveries(org_id, where.fields(), query.after, query.fetch)
        items, next_cursor = page(docs, query.limit, lambda d: str(d["sort_key"]))
        attempts = await self.repo.attempts_of(org_id, [d["_id"] for d in items])
        return DeliveryPage([(d, attempts.get(d["_id"], [])) for d in items], next_cursor)
