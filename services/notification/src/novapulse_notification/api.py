"""HTTP API (thin views): the caller's in-app notifications, preferences, and the organisation's delivery log."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from novapulse_runtime.problems import ProblemError
from novapulse_runtime.ratelimit import RateLimit, by_user
from novapulse_runtime.routes import Routes
from novapulse_runtime.tokens import principal, require_role

from . import preferences as prefs
from .constants import (
    API_PREFIX,
    CRITICAL_CATEGORIES,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    ROUTE_LIMIT_PER_MINUTE,
    Category,
    Channel,
    DeliveryState,
)
from .repository import Doc, Repository, from_ms

_ID = re.compile(r"^[0-9a-f]{32}$")
_CURSOR = r"^[0-9]{14}-[0-9a-f]{1,64}$"


USER_LIMIT = RateLimit("notifications-user", ROUTE_LIMIT_PER_MINUTE, 60, by_user)


class NotificationOut(BaseModel):
    id: str
    category: Category
    event_type: str
    title: str
    body: str
    link: str | None = None
    created_at: datetime
    read_at: datetime | None = None


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    unread_count: int
    next_cursor: str | None = None


class PageQuery(BaseModel):
    cursor: str = Field(default="", pattern=f"({_CURSOR})|^$")
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    unread: bool = False


class ReadAllOut(BaseModel):
    updated: int


class ChannelSwitches(BaseModel):
    email: bool
    in_app: bool


class ChannelSwitchesIn(BaseModel):
    """``null`` or left out: keep the current setting."""

    email: bool | None = None
    in_app: bool | None = None


_CRITICAL_SWITCHES: dict[str, Any] = {
    "type": "object",
    "description": "a critical category: its channels cannot be switched off",
    "properties": {channel.value: {"enum": [True, None]} for channel in Channel},
}


class PreferencesIn(BaseModel):
    """Switches per category; categories and channels left out keep their current setting."""

    categories: dict[Category, ChannelSwitchesIn] = Field(
        json_schema_extra={"properties": {c.value: _CRITICAL_SWITCHES for c in sorted(CRITICAL_CATEGORIES)}}
    )


class PreferencesOut(BaseModel):
    categories: dict[Category, ChannelSwitches]
    critical: list[Category]


class AttemptOut(BaseModel):
    at: datetime
    relay: str
    outcome: Literal["sent", "transient", "permanent"]
    code: int | None = None
    response: str = ""


class DeliveryOut(BaseModel):
    id: str
    event_id: str
    event_type: str
    template: str
    category: Category
    channel: Channel
    recipient: str
    user_id: str | None = None
    email: str | None = None
    state: DeliveryState
    reason: str | None = None
    critical: bool = False
    attempts: list[AttemptOut]
    created_at: datetime
    sent_at: datetime | None = None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None = None


class DeliveryQuery(BaseModel):
    state: DeliveryState | None = None
    channel: Channel | None = None
    category: Category | None = None
    event_type: str | None = Field(default=None, max_length=128)
    event_id: str | None = Field(default=None, max_length=128)
    user_id: str | None = Field(default=None, max_length=128)
    email: str | None = Field(default=None, max_length=320)
    cursor: str = Field(default="", pattern=f"({_CURSOR})|^$")
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)


def _notice(doc: Doc) -> NotificationOut:
    return NotificationOut(
        id=doc["_id"],
        category=doc["category"],
        event_type=doc.get("event_type", ""),
        title=doc.get("title", ""),
        body=doc.get("body", ""),
        link=doc.get("link"),
        created_at=doc["created_at"],
        read_at=from_ms(doc.get("read_ms")),
    )


def _delivery(doc: Doc, attempts: list[Doc]) -> DeliveryOut:
    return DeliveryOut(
        id=doc["_id"],
        event_id=doc["event_id"],
        event_type=doc.get("event_type", ""),
        template=doc.get("template", ""),
        category=doc["category"],
        channel=doc["channel"],
        recipient=doc["recipient"],
        user_id=doc.get("user_id"),
        email=doc.get("email"),
        state=doc["state"],
        reason=doc.get("reason"),
        critical=bool(doc.get("critical")),
        attempts=[
            AttemptOut(at=a["at"], relay=a["relay"], outcome=a["outcome"], code=a.get("code"), response=a["response"])
            for a in attempts
        ],
        created_at=doc["created_at"],
        sent_at=from_ms(doc.get("sent_ms")),
    )


def _preferences(stored: Doc | None) -> PreferencesOut:
    matrix = prefs.merge(stored.get("channels") if stored else None)
    return PreferencesOut(
        categories={Category(c): ChannelSwitches(**v) for c, v in matrix.items()},
        critical=sorted(CRITICAL_CATEGORIES),
    )


def build_routes(repo: Repository) -> Routes:
    """The service's routes under ``/api/v1/notifications``."""
    routes = Routes(prefix=API_PREFIX, tags=["notifications"])

    @routes.get(
        "/notifications", query=PageQuery, response=NotificationPage, auth=True, rate_limits=[USER_LIMIT], errors=(401,)
    )
    async def list_notifications(request: web.Request, query: PageQuery) -> NotificationPage:
        """The caller's in-app notifications, newest first, with the unread count."""
        who = principal(request)
        docs = await repo.list_notices(who.org_id, who.user_id, query.cursor, query.limit + 1, query.unread)
        more = len(docs) > query.limit
        docs = docs[: query.limit]
        return NotificationPage(
            items=[_notice(d) for d in docs],
            unread_count=await repo.unread_count(who.org_id, who.user_id),
            next_cursor=docs[-1]["sort_key"] if more else None,
        )

    @routes.post(
        "/notifications/{id}/read", response=NotificationOut, auth=True, rate_limits=[USER_LIMIT], errors=(401, 404)
    )
    async def mark_read(request: web.Request) -> NotificationOut:
        """Mark one of the caller's notifications read."""
        who = principal(request)
        notice_id = request.match_info["id"]
        doc = await repo.mark_read(who.org_id, who.user_id, notice_id) if _ID.match(notice_id) else None
        if doc is None:
            raise ProblemError(404, "No such notification")
        return _notice(doc)

    @routes.post("/notifications/read-all", response=ReadAllOut, auth=True, rate_limits=[USER_LIMIT], errors=(401,))
    async def mark_all_read(request: web.Request) -> ReadAllOut:
        """Mark every notification of the caller read."""
        who = principal(request)
        return ReadAllOut(updated=await repo.mark_all_read(who.org_id, who.user_id))

    @routes.get("/preferences", response=PreferencesOut, auth=True, rate_limits=[USER_LIMIT], errors=(401,))
    async def get_preferences(request: web.Request) -> PreferencesOut:
        """The caller's notification preferences (critical categories are always on)."""
        who = principal(request)
        return _preferences(await repo.get_preferences(who.org_id, who.user_id))

    @routes.put(
        "/preferences",
        body=PreferencesIn,
        response=PreferencesOut,
        auth=True,
        rate_limits=[USER_LIMIT],
        errors=(401, 422),
    )
    async def put_preferences(request: web.Request, body: PreferencesIn) -> PreferencesOut:
        """Switch categories and channels on or off; critical categories cannot be turned off."""
        who = principal(request)
        requested = {c.value: s.model_dump(exclude_none=True) for c, s in body.categories.items()}
        refused = prefs.turned_off_critical(requested)
        if refused:
            raise ProblemError(422, f"Critical notifications cannot be turned off: {', '.join(refused)}")
        stored = await repo.get_preferences(who.org_id, who.user_id)
        current = prefs.merge(stored.get("channels") if stored else None)
        for category, switches in requested.items():
            current[category].update(switches)
        await repo.put_preferences(who.org_id, who.user_id, prefs.merge(current))
        return _preferences(await repo.get_preferences(who.org_id, who.user_id))

    @routes.get(
        "/deliveries",
        query=DeliveryQuery,
        response=DeliveryPage,
        auth=True,
        rate_limits=[USER_LIMIT],
        errors=(401, 403),
    )
    async def list_deliveries(request: web.Request, query: DeliveryQuery) -> DeliveryPage:
        """The organisation's delivery log with every attempt (owners and admins), newest first."""
        who = require_role(request, "owner", "admin")
        filters: dict[str, Any] = {}
        for name in ("state", "channel", "category", "event_type", "event_id", "user_id"):
            value = getattr(query, name)
            if value is not None:
                filters[name] = value.value if hasattr(value, "value") else value
        if query.email is not None:
            filters["email"] = query.email.lower()
        docs = await repo.list_deliveries(who.org_id, filters, query.cursor, query.limit + 1)
        more = len(docs) > query.limit
        docs = docs[: query.limit]
        attempts = await repo.attempts_of(who.org_id, [d["_id"] for d in docs])
        return DeliveryPage(
            items=[_delivery(d, attempts.get(d["_id"], [])) for d in docs],
            next_cursor=docs[-1]["sort_key"] if more else None,
        )

    return routes
