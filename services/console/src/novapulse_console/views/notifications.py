"""The in-app inbox (notification service): the list with paging, read one, read all; the unread count in
the navigation (a small fragment htmx polls every 15 s, ``/notifications/badge``); the preferences."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..client import ApiProblem
from ..web import Console, Section, console_of, form, redirect, safe_next, signed_in

ID = re.compile(r"^[0-9a-f]{32}$")
PAGE_SIZE = 20
CHANNELS = (("in_app", "In the console"), ("email", "By e-mail"))
CATEGORY_TITLES = {
    "security": "Security (sign-ins, two-factor, passwords)",
    "account": "Account (welcome, roles, invitations)",
    "webhooks": "Webhooks",
    "reports": "Reports",
    "workflows": "Workflows",
}


def safe_link(link: Any) -> str:
    """A notification's link when it is an http(s) URL or a path of this console; else nothing."""
    if isinstance(link, str) and (link.startswith(("https://", "http://")) or safe_next(link) == link != "/"):
        return link
    return ""


@signed_in
async def inbox(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    unread = request.query.get("unread") == "1"
    cursor = request.query.get("cursor", "")[:200]
    found = await console.client.call(
        request,
        "notification",
        "GET",
        "/notifications",
        params={"limit": PAGE_SIZE, "cursor": cursor, "unread": "true" if unread else None},
    )
    items = [{**n, "link": safe_link(n.get("link"))} for n in found["items"]]
    return console.render(
        request,
        "notifications/inbox.html",
        items=items,
        unread_count=int(found.get("unread_count", 0)),
        next_cursor=found.get("next_cursor"),
        unread_only=unread,
        first_page=not cursor,
    )


async def badge(request: web.Request) -> web.StreamResponse:
    """The unread count as a fragment for the navigation (empty when none, signed out or unreachable)."""
    count = 0
    if request["session"].signed_in:
        try:
            found = await console_of(request).client.call(
                request, "notification", "GET", "/notifications", params={"limit": 1, "unread": "true"}
            )
            count = int(found.get("unread_count", 0))
        except ApiProblem:
            count = 0
    return console_of(request).render(request, "notifications/badge.html", count=count)


@signed_in
async def read_one(request: web.Request) -> web.StreamResponse:
    notice_id = request.match_info["notification_id"]
    if not ID.fullmatch(notice_id):
        raise web.HTTPNotFound(reason="Not found", text="There is no such notification.")
    await console_of(request).client.call(request, "notification", "POST", f"/notifications/{notice_id}/read")
    back = safe_next((await form(request)).get("back"))
    return redirect(request, back if back.startswith("/notifications") else "/notifications")


@signed_in
async def read_all(request: web.Request) -> web.StreamResponse:
    answer = await console_of(request).client.call(request, "notification", "POST", "/notifications/read-all")
    updated = int(answer.get("updated", 0)) if isinstance(answer, dict) else 0
    request["session"].flash_message("ok", f"{updated} notification{'' if updated == 1 else 's'} marked read.")
    return redirect(request, "/notifications")


@signed_in
async def preferences_page(request: web.Request) -> web.StreamResponse:
    prefs = await console_of(request).client.call(request, "notification", "GET", "/preferences")
    return _preferences(request, prefs, error="")


def _preferences(request: web.Request, prefs: dict[str, Any], *, error: str, status: int = 200) -> web.Response:
    return console_of(request).render(
        request,
        "notifications/preferences.html",
        status=status,
        prefs=prefs,
        channels=CHANNELS,
        titles=CATEGORY_TITLES,
        error=error,
    )


@signed_in
async def save_preferences(request: web.Request) -> web.StreamResponse:
    """PUT /preferences with every switchable category: a box left unticked is off."""
    console = console_of(request)
    fields = await form(request)
    prefs = await console.client.call(request, "notification", "GET", "/preferences")
    critical = set(prefs.get("critical", []))
    body = {
        "categories": {
            category: {channel: f"{category}.{channel}" in fields for channel, _title in CHANNELS}
            for category in prefs["categories"]
            if category not in critical
        }
    }
    try:
        await console.client.call(request, "notification", "PUT", "/preferences", json_body=body)
    except ApiProblem as problem:
        if problem.status != 422:
            raise
        return _preferences(request, prefs, error=problem.message, status=422)
    request["session"].flash_message("ok", "Your notification preferences are saved.")
    return redirect(request, "/notifications/preferences")


def register(console: Console, router: web.UrlDispatcher) -> None:
    console.section(Section("notifications", "Notifications", "/notifications", "notification"))
    router.add_get("/notifications", inbox)
    router.add_get("/notifications/badge", badge)
    router.add_post("/notifications/read-all", read_all)
    router.add_post("/notifications/{notification_id}/read", read_one)
    router.add_get("/notifications/preferences", preferences_page)
    router.add_post("/notifications/preferences", save_preferences)
