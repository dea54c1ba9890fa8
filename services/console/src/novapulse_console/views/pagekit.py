"""Small helpers shared by the webhook, event-bus, workflow and report pages: path ids, form times, JSON."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What a path id of any service looks like (``ep_…``, ``msg_…``, ``wd_…``, ``rep_…``); anything else is a
404 before any call, so no id can turn into another path (``..``) on the way to the API."""


def ident(request: web.Request, name: str, pattern: re.Pattern[str] = ID) -> str:
    """The path parameter ``name`` when it has the shape of an id; otherwise a 404 page."""
    value = request.match_info.get(name, "")
    if not pattern.fullmatch(value):
        raise web.HTTPNotFound(reason="Not found", text="There is no such page.")
    return value


def form_time(value: str, field: str) -> str | None:
    """A ``datetime-local`` field (``YYYY-MM-DDTHH:MM``, read as UTC) or an ISO 8601 time with an offset, as
    ISO 8601 with an offset; ``None`` when empty.

    :raises ValueError: the text is not a time (the message names ``field``).
    """
    text = value.strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{field}: not a date and time (YYYY-MM-DDTHH:MM, UTC)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.isoformat()


def local_input(value: str | None) -> str:
    """An ISO 8601 time as the value of a ``datetime-local`` input in UTC (``YYYY-MM-DDTHH:MM``)."""
    if not value:
        return ""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return ""
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M")


def shown_time(value: Any) -> str:
    """An ISO 8601 time from an API as ``YYYY-MM-DD HH:MM:SS UTC`` (empty for none)."""
    if not value:
        return ""
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty(value: Any) -> str:
    """``value`` as indented JSON (for ``<pre>``)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def query_of(request: web.Request, *names: str) -> dict[str, str]:
    """The query parameters ``names`` (trimmed, at most 200 characters each; missing ones empty)."""
    return {n: request.query.get(n, "").strip()[:200] for n in names}
