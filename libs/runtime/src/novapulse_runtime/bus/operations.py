"""Operations: stream and group statistics, dead-letter listing and replay; the HTTP routes over them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from .. import catalog
from ..problems import ProblemError
from ..routes import Routes
from .constants import (
    D_DELIVERIES,
    D_ENTRY,
    D_ERROR,
    D_GROUP,
    D_REASON,
    D_STREAM,
    D_TIME,
    D_TRUNCATED,
    DEAD_PREFIX,
    F_ID,
    F_TYPE,
)
from .streams import groups_info, id_age_seconds, lag_of

if TYPE_CHECKING:
    from . import EventBus

ENTRY_ID = re.compile(r"^[0-9]{1,19}-[0-9]{1,19}$")
"""A stream entry id: ASCII digits only (``\\d`` also matches other scripts' digits) and at most 19 of them on
each side, so the number always fits the 64 bits Redis allows (20 digits can overflow: a Redis error, 500)."""


class ConsumerStats(BaseModel):
    name: str
    pending: int
    idle_ms: int


class GroupStats(BaseModel):
    name: str
    consumers: int
    pending: int
    lag: int | None = Field(description="Entries not yet delivered to the group (counted up to 10000 on Redis 6)")
    last_delivered_id: str
    oldest_pending_id: str | None = None
    oldest_pending_age_s: float | None = None
    consumer_list: list[ConsumerStats] = []


class StreamStats(BaseModel):
    name: str
    length: int
    exists: bool
    groups: list[GroupStats] = []


class StreamsOut(BaseModel):
    streams: list[StreamStats]


class DeadLetter(BaseModel):
    entry_id: str = Field(description="Id of the entry in the dead-letter stream (use it to replay)")
    event_id: str | None
    type: str | None
    reason: str
    error: str
    stream: str = Field(description="Stream the entry was read from")
    original_entry_id: str
    group: str
    deliveries: int
    dead_at: str
    truncated: bool
    fields: dict[str, str] = Field(description="The original envelope fields")


class DeadLettersOut(BaseModel):
    group: str
    stream: str
    length: int
    items: list[DeadLetter]
    next_after: str | None = Field(description="Pass as ?after= for the next page")


class DeadLettersQuery(BaseModel):
    group: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    limit: int = Field(default=50, ge=1, le=1000)
    after: str | None = Field(default=None, pattern=ENTRY_ID.pattern)


class GroupQuery(BaseModel):
    group: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class ReplayOut(BaseModel):
    replayed: int
    stream: str = Field(description="The group's replay stream the entries were written to")
    entry_ids: list[str]


async def stream_stats(redis: Redis, stream: str) -> StreamStats:
    """Length and per-group pending, lag, consumers and oldest pending age of one stream."""
    exists = bool(await redis.exists(stream))
    length = int(await redis.xlen(stream)) if exists else 0
    groups: list[GroupStats] = []
    for g in await groups_info(redis, stream):
        name = str(g["name"])
        pending = int(g.get("pending") or 0)
        oldest = None
        if pending:
            summary = await redis.xpending(stream, name)
            oldest = str(summary.get("min")) if summary.get("min") else None
        consumers = await redis.xinfo_consumers(stream, name)
        groups.append(
            GroupStats(
                name=name,
                consumers=int(g.get("consumers") or 0),
                pending=pending,
                lag=await lag_of(redis, stream, g),
                last_delivered_id=str(g.get("last-delivered-id") or "0-0"),
                oldest_pending_id=oldest,
                oldest_pending_age_s=round(id_age_seconds(oldest), 3) if oldest else None,
                consumer_list=[
                    ConsumerStats(name=str(c["name"]), pending=int(c["pending"]), idle_ms=int(c["idle"]))
                    for c in consumers
                ],
            )
        )
    return StreamStats(name=stream, length=length, exists=exists, groups=groups)


def _dead_letter(entry_id: str, fields: dict[str, str]) -> DeadLetter:
    return DeadLetter(
        entry_id=entry_id,
        event_id=fields.get(F_ID),
        type=fields.get(F_TYPE),
        reason=fields.get(D_REASON, ""),
        error=fields.get(D_ERROR, ""),
        stream=fields.get(D_STREAM, ""),
        original_entry_id=fields.get(D_ENTRY, ""),
        group=fields.get(D_GROUP, ""),
        deliveries=int(fields.get(D_DELIVERIES, "0") or 0),
        dead_at=fields.get(D_TIME, ""),
        truncated=fields.get(D_TRUNCATED) == "1",
        fields={k: v for k, v in fields.items() if not k.startswith(DEAD_PREFIX)},
    )


class Operations:
    """Statistics, dead letters and replay for one bus (used by the routes, usable directly)."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.redis = bus.rt.redis

    def known_streams(self, group: str | None = None) -> list[str]:
        group = group or self.bus.rt.service
        names = {self.bus.stream()}
        for consumer in self.bus.consumers:
            names.update(consumer.streams())
            names.add(self.bus.keys.dead(consumer.group))
        names.add(self.bus.keys.dead(group))
        names.add(self.bus.keys.replay(group))
        return sorted(names)

    async def streams(self, group: str | None = None) -> list[StreamStats]:
        """Stats of :meth:`known_streams`, plus every catalogue stream on which ``group`` exists (an API
        process declares no consumer, yet its service's group reads those streams)."""
        group = group or self.bus.rt.service
        names = set(self.known_streams(group))
        for source in {et.source for et in catalog.all_types()}:
            stream = self.bus.keys.stream(source)
            if stream not in names and any(g.get("name") == group for g in await groups_info(self.redis, stream)):
                names.add(stream)
        return [await stream_stats(self.redis, s) for s in sorted(names)]

    async def dead_letters(self, group: str | None = None, limit: int = 50, after: str | None = None) -> DeadLettersOut:
        """A page of the group's dead letters, oldest first."""
        group = group or self.bus.rt.service
        stream = self.bus.keys.dead(group)
        start = f"({after}" if after else "-"
        entries: list[Any] = await self.redis.xrange(stream, min=start, max="+", count=limit) or []
        items = [_dead_letter(str(eid), dict(fields or {})) for eid, fields in entries]
        length = int(await self.redis.xlen(stream))
        next_after = items[-1].entry_id if len(items) == limit else None
        return DeadLettersOut(group=group, stream=stream, length=length, items=items, next_after=next_after)

    async def replay(self, entry_id: str, group: str | None = None) -> str | None:
        """Move one dead letter back to the group's replay stream (only that group sees it again) with its
        original envelope; returns the new entry id, ``None`` when there is no such dead letter."""
        group = group or self.bus.rt.service
        dead = self.bus.keys.dead(group)
        found = await self.redis.xrange(dead, min=entry_id, max=entry_id, count=1)
        if not found:
            return None
        return (await self._move(dead, group, found))[0]

    async def replay_all(self, group: str | None = None, batch: int = 500) -> list[str]:
        """Replay every dead letter of the group, oldest first."""
        group = group or self.bus.rt.service
        dead = self.bus.keys.dead(group)
        moved: list[str] = []
        while True:
            found = await self.redis.xrange(dead, min="-", max="+", count=batch)
            if not found:
                return moved
            moved.extend(await self._move(dead, group, found))

    async def _move(self, dead: str, group: str, entries: list[Any]) -> list[str]:
        target = self.bus.keys.replay(group)
        async with self.redis.pipeline(transaction=True) as pipe:
            for _eid, fields in entries:
                original = {k: v for k, v in fields.items() if not k.startswith(DEAD_PREFIX)}
                if not original:
                    original = {"dead_empty": "1"}
                pipe.xadd(target, original)
            pipe.xdel(dead, *[eid for eid, _ in entries])
            result = await pipe.execute()
        return [str(r) for r in result[:-1]]


def build_routes(bus: EventBus, prefix: str) -> Routes:
    """``GET {prefix}/events/streams``, ``GET {prefix}/events/dead-letters``,
    ``POST {prefix}/events/dead-letters/{entry_id}/replay``, ``POST {prefix}/events/dead-letters/replay``."""
    routes = Routes(prefix=prefix, tags=["events"])
    ops = bus.operations

    @routes.get("/events/streams", query=GroupQuery, response=StreamsOut, operator=True)
    async def event_streams(_request: web.Request, query: GroupQuery) -> StreamsOut:
        """Streams this service produces and consumes, with length, groups, pending, lag and consumers."""
        return StreamsOut(streams=await ops.streams(query.group))

    @routes.get("/events/dead-letters", query=DeadLettersQuery, response=DeadLettersOut, operator=True)
    async def dead_letters(_request: web.Request, query: DeadLettersQuery) -> DeadLettersOut:
        """Dead letters of a consumer group (default: this service's group), oldest first."""
        return await ops.dead_letters(query.group, query.limit, query.after)

    @routes.post("/events/dead-letters/replay", query=GroupQuery, response=ReplayOut, operator=True)
    async def replay_all(_request: web.Request, query: GroupQuery) -> ReplayOut:
        """Replay every dead letter of the group."""
        ids = await ops.replay_all(query.group)
        group = query.group or bus.rt.service
        return ReplayOut(replayed=len(ids), stream=bus.keys.replay(group), entry_ids=ids)

    @routes.post(
        "/events/dead-letters/{entry_id}/replay", query=GroupQuery, response=ReplayOut, operator=True, errors=(404,)
    )
    async def replay_one(request: web.Request, query: GroupQuery) -> ReplayOut:
        """Replay one dead letter to the group that dead-lettered it."""
        entry_id = request.match_info["entry_id"]
        if not ENTRY_ID.match(entry_id):
            raise ProblemError(404, f"No dead letter {entry_id}")
        new_id = await ops.replay(entry_id, query.group)
        if new_id is None:
            raise ProblemError(404, f"No dead letter {entry_id}")
        group = query.group or bus.rt.service
        return ReplayOut(replayed=1, stream=bus.keys.replay(group), entry_ids=[new_id])

    return routes
