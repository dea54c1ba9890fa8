"""A minimal service used only by the runtime's tests: a slow route (shutdown drain), a rate-limited route
(shared limits), a validated body (error shapes), routes that read MongoDB and Redis (outages), typed query
parameters and free-form JSON (strict parsing), overlapping path templates (``Allow``), and a worker."""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from novapulse_runtime.errors import Conflict, ErrorTable, LimitReached, NotFound, Problem
from novapulse_runtime.paging import PageQuery, page
from novapulse_runtime.process import ServiceSpec
from novapulse_runtime.ratelimit import RateLimit
from novapulse_runtime.routes import Routes, path_id
from novapulse_runtime.runtime import Runtime, Worker
from novapulse_runtime.settings import ServiceSettings
from novapulse_runtime.tokens import principal

log = logging.getLogger("sample")


class SampleSettings(ServiceSettings):
    service_name: str = "sample"
    http_port: int = 8199


class EchoIn(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    count: int = Field(ge=0, le=10)


class EchoOut(BaseModel):
    name: str
    count: int


class SlowQuery(BaseModel):
    seconds: float = Field(default=1.0, ge=0, le=30)


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


class ItemsQuery(BaseModel):
    limit: int = Field(default=10, ge=1, le=100)
    ratio: float | None = Field(default=None, ge=0, le=1)
    flag: bool = False
    since: datetime | None = None
    colour: Colour | None = None
    tags: list[str] = Field(default_factory=list, max_length=3)


class ItemsOut(BaseModel):
    limit: int
    ratio: float | None
    flag: bool
    since: datetime | None
    colour: Colour | None
    tags: list[str]


class EventIn(BaseModel):
    type: str = Field(min_length=1, max_length=64)
    data: dict[str, Any]
    at: datetime | None = None


class CountOut(BaseModel):
    count: int


class ThingList(BaseModel):
    items: list[str]
    next_cursor: str | None


class ThingTaken(Conflict):
    """A domain error the sample's table maps to its own problem."""


class Busy(LimitReached):
    """A domain error the table leaves to the runtime's default (429 with Retry-After)."""


PROBLEMS: ErrorTable = {ThingTaken: Problem(409, title="Thing taken", type="https://errors.example/thing-taken")}
THINGS = [f"t{i:02d}" for i in range(5)]
THING_ID = re.compile(r"t[0-9]{2}")


async def api(rt: Runtime) -> Routes:
    routes = Routes(prefix="/api/v1/sample", tags=["sample"], problems=PROBLEMS)

    @routes.get("/gadgets", query=PageQuery, response=ThingList)
    async def list_things(request: web.Request, query: PageQuery) -> ThingList:
        """Five things, paged by the runtime's rule."""
        after = query.after
        rows = [t for t in THINGS if after is None or t > after][: query.fetch]
        items, cursor = page(rows, query.limit, key=lambda t: t)
        return ThingList(items=items, next_cursor=cursor)

    @routes.get("/gadgets/{gadget_id}", response=EchoOut)
    async def get_thing(request: web.Request) -> EchoOut:
        """One thing; ids not shaped like ``t00`` name nothing."""
        thing = path_id(request, "gadget_id", THING_ID)
        if thing not in THINGS:
            raise NotFound(f"No gadget {thing}")
        return EchoOut(name=thing, count=0)

    @routes.post("/gadgets/{gadget_id}/take", response=EchoOut)
    async def take_thing(request: web.Request) -> EchoOut:
        """Always taken: a domain error mapped by the service's table."""
        raise ThingTaken("That thing is taken", gadget=request.match_info["gadget_id"])

    @routes.post("/busy", response=EchoOut)
    async def busy(request: web.Request) -> EchoOut:
        """A domain limit: the runtime's default mapping."""
        raise Busy("Too busy", retry_after=7)

    @routes.post("/echo", body=EchoIn, response=EchoOut, status=201)
    async def echo(request: web.Request, body: EchoIn) -> EchoOut:
        """Echo a validated body."""
        log.info("echo", extra={"echo_name": body.name})
        return EchoOut(name=body.name, count=body.count)

    @routes.get("/slow", query=SlowQuery, response=EchoOut)
    async def slow(request: web.Request, query: SlowQuery) -> EchoOut:
        """Answer after a delay."""
        await asyncio.sleep(query.seconds)
        return EchoOut(name="slow", count=int(query.seconds))

    @routes.get("/limited", response=EchoOut, rate_limits=[RateLimit("limited-ip", 5, 60)])
    async def limited(request: web.Request) -> EchoOut:
        """Five calls a minute per client address."""
        return EchoOut(name="ok", count=0)

    @routes.get("/boom")
    async def boom(request: web.Request) -> None:
        """Fail with an unexpected error."""
        raise RuntimeError("secret internal detail")

    @routes.get("/whoami", response=EchoOut, auth=True)
    async def whoami(request: web.Request) -> EchoOut:
        """The caller's user id."""
        return EchoOut(name=principal(request).user_id, count=0)

    @routes.get("/items", query=ItemsQuery, response=ItemsOut)
    async def items(request: web.Request, query: ItemsQuery) -> ItemsOut:
        """Echo typed query parameters."""
        return ItemsOut(**query.model_dump())

    @routes.post("/events", body=EventIn, response=EventIn, status=202)
    async def events(request: web.Request, body: EventIn) -> EventIn:
        """Echo free-form JSON data."""
        return body

    @routes.get("/store", response=CountOut)
    async def store(request: web.Request) -> CountOut:
        """Count documents in MongoDB."""
        return CountOut(count=await rt.db["items"].count_documents({}))

    @routes.get("/cache", response=CountOut)
    async def cache(request: web.Request) -> CountOut:
        """Read a counter from Redis."""
        return CountOut(count=int(await rt.redis.get(f"{rt.service}:counter") or 0))

    @routes.delete("/things/{thing_id}")
    async def drop_thing(request: web.Request) -> None:
        """Delete a thing (no response model: 204)."""

    @routes.post("/things/special", response=CountOut)
    async def special_thing(request: web.Request) -> CountOut:
        """A literal path overlapping the template above."""
        return CountOut(count=1)

    return routes


async def worker(rt: Runtime) -> list[Worker]:
    async def ticker(stop: asyncio.Event) -> None:
        await stop.wait()
        log.info("ticker stopped")

    return [ticker]


SPEC = ServiceSpec(name="sample", settings_cls=SampleSettings, api=api, worker=worker, package="tests.support.sample")
