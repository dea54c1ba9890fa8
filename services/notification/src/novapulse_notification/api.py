"""HTTP API (thin views): the caller's in-app notifications, preferences, and the organisation's delivery log.

Views parse the request, call the use cases (:mod:`.inbox`, :mod:`.preferences`, :mod:`.delivery_log`) and map
their results to :mod:`.models`; domain errors become problems through the one table :data:`PROBLEMS`.
"""

from __future__ import annotations

import re

from aiohttp import web

from novapulse_runtime.errors import ErrorTable, Problem
from novapulse_runtime.ratelimit import RateLimit, by_user
from novapulse_runtime.roles import MANAGERS
from novapulse_runtime.routes import Routes, path_id
from novapulse_runtime.tokens import principal, require_role

from .constants import API_PREFIX, ROUTE_LIMIT_PER_MINUTE
from .delivery_log import DeliveryFilter, DeliveryLog
from .errors import CriticalNotSwitchable, NotificationNotFound
from .inbox import Inbox
from .models import (
    DeliveryPage,
    DeliveryQuery,
    NotificationOut,
    NotificationPage,
    NotificationQuery,
    PreferencesIn,
    PreferencesOut,
    ReadAllOut,
    delivery_out,
    notification_out,
    preferences_out,
)
from .preferences import Preferences

NOTICE_ID = re.compile(r"[0-9a-f]{32}")
"""The shape of a notice id (:func:`~.keys.notice_key`)."""

USER_LIMIT = RateLimit("notifications-user", ROUTE_LIMIT_PER_MINUTE, 60, by_user)

PROBLEMS: ErrorTable = {
    NotificationNotFound: Problem(404),
    CriticalNotSwitchable: Problem(422),
}
"""How the service's domain errors are answered."""


def build_routes(inbox: Inbox, preferences: Preferences, delivery_log: DeliveryLog) -> Routes:
    """The service's routes under ``/api/v1/notifications``."""
    routes = Routes(prefix=API_PREFIX, tags=["notifications"], problems=PROBLEMS)

    @routes.get(
        "/notifications",
        query=NotificationQuery,
        response=NotificationPage,
        auth=True,
        rate_limits=[USER_LIMIT],
        errors=(401,),
    )
    async def list_notifications(request: web.Request, query: NotificationQuery) -> NotificationPage:
        """The caller's in-app notifications, newest first, with the unread count."""
        who = principal(request)
        found = await inbox.page(who.org_id, who.user_id, query, unread_only=query.unread)
        return NotificationPage(
            items=[notification_out(d) for d in found.items],
            unread_count=found.unread_count,
            next_cursor=found.next_cursor,
        )

    @routes.post(
        "/notifications/{notification_id}/read",
        response=NotificationOut,
        auth=True,
        rate_limits=[USER_LIMIT],
        errors=(401, 404),
    )
    async def mark_read(request: web.Request) -> NotificationOut:
        """Mark one of the caller's notifications read."""
        who = principal(request)
        notice_id = path_id(request, "notification_id", NOTICE_ID)
        return notification_out(await inbox.read(who.org_id, who.user_id, notice_id))

    @routes.post("/notifications/read-all", response=ReadAllOut, auth=True, rate_limits=[USER_LIMIT], errors=(401,))
    async def mark_all_read(request: web.Request) -> ReadAllOut:
        """Mark every notification of the caller read."""
        who = principal(request)
        return ReadAllOut(updated=await inbox.read_all(who.org_id, who.user_id))

    @routes.get("/preferences", response=PreferencesOut, auth=True, rate_limits=[USER_LIMIT], errors=(401,))
    async def get_preferences(request: web.Request) -> PreferencesOut:
        """The caller's notification preferences (critical categories are always on)."""
        who = principal(request)
        return preferences_out(await preferences.get(who.org_id, who.user_id))

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
        return preferences_out(await preferences.update(who.org_id, who.user_id, body.requested()))

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
        who = require_role(request, *MANAGERS)
        where = DeliveryFilter(
            state=query.state,
            channel=query.channel,
            category=query.category,
            event_type=query.event_type,
            event_id=query.event_id,
            user_id=query.user_id,
            email=query.email,
        )
        found = await delivery_log.page(who.org_id, query, where)
        return DeliveryPage(
            items=[delivery_out(d, attempts) for d, attempts in found.items],
            next_cursor=found.next_cursor,
        )

    return routes
