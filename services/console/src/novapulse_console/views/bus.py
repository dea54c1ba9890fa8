"""The event bus, for the platform's operators only (``CONSOLE_OPERATOR_EMAILS``; a tenant gets 404 and never
sees the entry): streams, consumer groups, consumers, pending entries, lag and the oldest pending entry's
age, refreshed every 5 s (htmx polls ``/bus/live``); each service's dead letters with their reason, replayed
one at a time or all at once.

Every call goes to the runtime's operations routes under each service's prefix (``GET events/streams``,
``GET events/dead-letters``, ``POST events/dead-letters/{entry_id}/replay``, ``POST events/dead-letters/replay``)
with ``OPERATIONS_TOKEN``, never a tenant's token.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from ..client import ApiProblem
from ..constants import SERVICES
from ..web import Console, Section, console_of, operators_only, redirect
from .pagekit import ident, shown_time

ENTRY_ID = re.compile(r"^[0-9]{1,19}-[0-9]{1,19}$")
SERVICE_NAME = re.compile(r"^[a-z]{1,32}$")


def _services(console: Console) -> list[str]:
    """The configured services, in the console's order (each runs a bus and mounts its operations)."""
    return [s for s in SERVICES if console.client.has(s)]


def _service(request: web.Request) -> str:
    service = ident(request, "service", SERVICE_NAME)
    if service not in _services(console_of(request)):
        raise web.HTTPNotFound(reason="Not found", text="There is no such service.")
    return service


async def _stats(request: web.Request) -> dict[str, Any]:
    """Every stream any service reports (by name, once), each service's dead-letter count and the services
    that did not answer."""
    console = console_of(request)
    services = _services(console)

    async def one(service: str) -> tuple[str, Any, Any]:
        try:
            streams = await console.client.call(request, service, "GET", "/events/streams", operator=True)
            dead = await console.client.call(
                request, service, "GET", "/events/dead-letters", params={"limit": 1}, operator=True
            )
        except ApiProblem as problem:
            return service, None, problem.message
        return service, streams, dead

    answers = await asyncio.gather(*(one(s) for s in services))
    streams: dict[str, dict[str, Any]] = {}
    dead: list[dict[str, Any]] = []
    down: list[tuple[str, str]] = []
    for service, found, other in answers:
        if found is None:
            down.append((service, str(other)))
            continue
        for stream in found["streams"]:
            if stream["exists"] or stream["groups"]:
                streams[stream["name"]] = stream
        dead.append({"service": service, "group": other["group"], "stream": other["stream"], "length": other["length"]})
    return {"streams": [streams[k] for k in sorted(streams)], "dead_counts": dead, "down": down}


@operators_only
async def bus_page(request: web.Request) -> web.StreamResponse:
    """``GET /bus``: the live numbers and the first page of every service's dead letters."""
    console = console_of(request)
    stats = await _stats(request)
    letters: list[dict[str, Any]] = []
    for entry in stats["dead_counts"]:
        if entry["length"]:
            try:
                page = await console.client.call(
                    request, entry["service"], "GET", "/events/dead-letters", params={"limit": 50}, operator=True
                )
            except ApiProblem as problem:
                stats["down"].append((entry["service"], problem.message))
                continue
            letters.append({"service": entry["service"], **page})
    return console.render(request, "bus/bus.html", letters=letters, **stats)


@operators_only
async def live(request: web.Request) -> web.StreamResponse:
    """``GET /bus/live``: the numbers alone (the fragment htmx swaps in every 5 s)."""
    return console_of(request).render(request, "bus/_live.html", **(await _stats(request)))


@operators_only
async def dead_letters_page(request: web.Request) -> web.StreamResponse:
    """``GET /bus/{service}/dead-letters?after=``: one service's dead letters, a page at a time."""
    console = console_of(request)
    service = _service(request)
    after = request.query.get("after", "")
    if after and not ENTRY_ID.fullmatch(after):
        raise web.HTTPNotFound(reason="Not found", text="That is not a stream entry id.")
    page = await console.client.call(
        request, service, "GET", "/events/dead-letters", params={"limit": 50, "after": after}, operator=True
    )
    return console.render(request, "bus/dead_letters.html", letters=[{"service": service, **page}])


@operators_only
async def replay_one(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    service = _service(request)
    entry_id = ident(request, "entry_id", ENTRY_ID)
    try:
        answer = await console.client.call(
            request, service, "POST", f"/events/dead-letters/{entry_id}/replay", operator=True
        )
    except ApiProblem as problem:
        if problem.status >= 500:
            raise
        request["session"].flash_message("error", problem.message)
    else:
        request["session"].flash_message(
            "ok", f"Dead letter {entry_id} of {service} replayed to {answer['stream']} ({answer['entry_ids'][0]})."
        )
    request["session_changed"] = True
    return redirect(request, "/bus")


@operators_only
async def replay_all(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    service = _service(request)
    answer = await console.client.call(request, service, "POST", "/events/dead-letters/replay", operator=True)
    request["session"].flash_message("ok", f"{answer['replayed']} dead letters of {service} replayed.")
    return redirect(request, "/bus")


def age(seconds: Any) -> str:
    """Seconds as a short age (``42 s``, ``3 min``, ``2 h``, ``4 d``); ``—`` for none."""
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.0f} h"
    return f"{s / 86400:.0f} d"


def register(console: Console, router: web.UrlDispatcher) -> None:
    console.env.filters.setdefault("when", shown_time)
    console.env.filters.setdefault("age", age)
    console.section(Section("bus", "Event bus", "/bus", "auth", operators_only=True))
    router.add_get("/bus", bus_page)
    router.add_get("/bus/live", live)
    router.add_get("/bus/{service}/dead-letters", dead_letters_page)
    router.add_post("/bus/{service}/dead-letters/replay", replay_all)
    router.add_post("/bus/{service}/dead-letters/{entry_id}/replay", replay_one)
