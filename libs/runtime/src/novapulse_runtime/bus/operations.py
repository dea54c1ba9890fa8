"""Operations: stream and group statistics, dead-letter listing and replay; the HTTP routes over them."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError

from ..catalog import CATALOG
from ..problems import ProblemError
from ..redisconn import is_cluster
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
    MAX_DEAD_FIELD_CHARS,
)
from .streams import (
    Fields,
    consumers_info,
    groups_info,
    id_age_seconds,
    lag_of,
    pending_summary,
    printable,
    raw,
    read_range,
    wire,
)

if TYPE_CHECKING:
    from . import EventBus

T = TypeVar("T")
ENTRY_ID = re.compile(r"^[0-9]{1,19}-[0-9]{1,19}$")
"""A stream entry id: ASCII digits only (``\\d`` also matches other scripts' digits) and at most 19 of them on
each side, so every id the pattern admits fits the 64 bits Redis allows (what the OpenAPI document says is
what the route accepts)."""
MAX_ID_PART = 2**64 - 1
PAGE_BUDGET_CHARS = 4 * 1024 * 1024
"""A page of dead letters stops once its field texts reach this many characters (``next_after`` goes on)."""
MAX_SHOWN_FIELDS = 64


def valid_entry_id(value: str) -> bool:
    """A stream entry id ``<ms>-<seq>`` whose parts fit in 64 bits (Redis refuses larger ones)."""
    if not ENTRY_ID.fullmatch(value):  # match would let "$" accept a trailing line break
        return False
    ms, _, seq = value.partition("-")
    return int(ms) <= MAX_ID_PART and int(seq) <= MAX_ID_PART


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
    truncated: bool = Field(
        description="The fields shown are not the whole original entry: it was over the size limit when "
        "dead-lettered, or a field was cut to 8192 characters (64 fields at most) for this listing"
    )
    fields: dict[str, str] = Field(
        description="The original envelope fields; bytes that are not UTF-8 are shown as \\xNN"
    )


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


def _int(value: Any) -> int:
    """An integer from a reply or a stored field; 0 for anything else (a foreign entry may hold text)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


async def stream_stats(redis: Redis, stream: str) -> StreamStats:
    """Length and per-group pending, lag, consumers and oldest pending age of one stream. Group and consumer
    names that are not UTF-8 are shown with ``\\xNN`` escapes. A key that is not a stream has length 0 and no
    groups."""
    exists = bool(await redis.exists(stream))
    try:
        length = int(await redis.xlen(stream)) if exists else 0
        infos = await groups_info(redis, stream)
    except ResponseError as exc:
        if "WRONGTYPE" not in str(exc):
            raise
        return StreamStats(name=stream, length=0, exists=exists, groups=[])
    groups: list[GroupStats] = []
    for g in infos:
        name = str(g["name"])
        pending = _int(g.get("pending"))
        oldest = None
        if pending:
            summary = await pending_summary(redis, stream, wire(name))
            oldest = summary["min"]
        consumers = await consumers_info(redis, stream, wire(name))
        groups.append(
            GroupStats(
                name=printable(name),
                consumers=_int(g.get("consumers")),
                pending=pending,
                lag=await lag_of(redis, stream, g),
                last_delivered_id=str(g.get("last-delivered-id") or "0-0"),
                oldest_pending_id=oldest,
                oldest_pending_age_s=round(id_age_seconds(oldest), 3) if oldest else None,
                consumer_list=[
                    ConsumerStats(name=printable(str(c["name"])), pending=_int(c["pending"]), idle_ms=_int(c["idle"]))
                    for c in consumers
                ],
            )
        )
    return StreamStats(name=stream, length=length, exists=exists, groups=groups)


def _shown(value: str | None, limit: int = MAX_DEAD_FIELD_CHARS) -> str:
    return printable(value[:limit]) if value else ""


def _dead_letter(entry_id: str, fields: Fields) -> tuple[DeadLetter, int]:
    """A dead-letter entry as shown by the API (every text printable and cut to size) and its size in
    characters."""
    original = [(k, v) for k, v in fields.items() if not k.startswith(DEAD_PREFIX)]
    cut = len(original) > MAX_SHOWN_FIELDS or any(len(k) > 256 or len(v) > MAX_DEAD_FIELD_CHARS for k, v in original)
    shown = {_shown(k, 256): _shown(v) for k, v in original[:MAX_SHOWN_FIELDS]}
    letter = DeadLetter(
        entry_id=entry_id,
        event_id=_shown(fields.get(F_ID), 256) or None,
        type=_shown(fields.get(F_TYPE), 256) or None,
        reason=_shown(fields.get(D_REASON), 64),
        error=_shown(fields.get(D_ERROR), 2000),
        stream=_shown(fields.get(D_STREAM), 256),
        original_entry_id=_shown(fields.get(D_ENTRY), 64),
        group=_shown(fields.get(D_GROUP), 256),
        deliveries=_int(fields.get(D_DELIVERIES)),
        dead_at=_shown(fields.get(D_TIME), 64),
        truncated=fields.get(D_TRUNCATED) == "1" or cut,
        fields=shown,
    )
    return letter, sum(len(k) + len(v) for k, v in shown.items()) + len(letter.error)


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
        for source in CATALOG.sources():
            stream = self.bus.keys.stream(source)
            if stream not in names and any(g.get("name") == group for g in await groups_info(self.redis, stream)):
                names.add(stream)
        return [await stream_stats(self.redis, s) for s in sorted(names)]

    async def dead_letters(self, group: str | None = None, limit: int = 50, after: str | None = None) -> DeadLettersOut:
        """A page of the group's dead letters, oldest first: at most ``limit`` and about
        :data:`PAGE_BUDGET_CHARS` characters of fields (``next_after`` is set when more may follow). Entries
        are read as bytes, so ones that are not UTF-8 are listed (``\\xNN`` escapes) rather than failing.
        Raises ``ValueError`` for an ``after`` that is not an entry id."""
        group = group or self.bus.rt.service
        stream = self.bus.keys.dead(group)
        if after is not None and not valid_entry_id(after):
            raise ValueError(f"not a stream entry id: {after!r}")
        start = f"({after}" if after else "-"
        entries = await read_range(self.redis, stream, start, "+", limit)
        items: list[DeadLetter] = []
        budget = PAGE_BUDGET_CHARS
        for _, eid, fields, _problem in entries:
            letter, size = _dead_letter(eid, fields or {})
            items.append(letter)
            budget -= size
            if budget <= 0:
                break
        length = int(await self.redis.xlen(stream))
        next_after = items[-1].entry_id if items and (len(items) == limit or budget <= 0) else None
        return DeadLettersOut(group=group, stream=stream, length=length, items=items, next_after=next_after)

    async def replay(self, entry_id: str, group: str | None = None) -> str | None:
        """Move one dead letter back to the group's replay stream (only that group sees it again) with its
        original envelope; returns the new entry id, ``None`` when there is no such dead letter."""
        group = group or self.bus.rt.service
        dead = self.bus.keys.dead(group)
        if not valid_entry_id(entry_id):
            return None
        found = await raw(self.redis, "XRANGE", dead, entry_id, entry_id, "COUNT", 1)
        if not found:
            return None
        return (await self._move(dead, group, found))[0]

    async def replay_all(self, group: str | None = None, batch: int = 500) -> list[str]:
        """Replay every dead letter of the group, oldest first."""
        group = group or self.bus.rt.service
        dead = self.bus.keys.dead(group)
        moved: list[str] = []
        while True:
            found = await raw(self.redis, "XRANGE", dead, "-", "+", "COUNT", batch)
            if not found:
                return moved
            moved.extend(await self._move(dead, group, found))

    async def _move(self, dead: str, group: str, entries: list[Any]) -> list[str]:
        """Copy entries read as bytes to the replay stream, byte for byte, and delete them from ``dead``;
        returns the new entry ids (raises ``RedisError``)."""
        target = self.bus.keys.replay(group)
        prefix = DEAD_PREFIX.encode()
        cluster = is_cluster(self.redis)
        # one MULTI on a single server; on a cluster the two streams are two slots: copies first, then XDEL
        # (a failure in between leaves the dead letters in place and their copies replayed: a second replay
        # of them is skipped by the group's idempotency keys, same event ids)
        async with self.redis.pipeline(transaction=not cluster) as pipe:
            for _eid, fields in entries:
                original = {k: v for k, v in (fields or {}).items() if not bytes(k).startswith(prefix)}
                if not original:
                    original = {b"dead_empty": b"1"}
                pipe.xadd(target, original)
            if not cluster:
                pipe.xdel(dead, *[eid for eid, _ in entries])
            result = await pipe.execute()
        if cluster:
            await self.redis.xdel(dead, *[eid for eid, _ in entries])
            result.append(None)
        return [r.decode() if isinstance(r, bytes) else str(r) for r in result[:-1]]


async def _refused_as_403(work: Awaitable[T]) -> T:
    """Run ``work``; a Redis ``NOPERM`` (the service's ACL user may not touch another group's dead letters,
    see ``docs/operations.md``) becomes a 403 problem instead of a 500."""
    try:
        return await work
    except ResponseError as exc:
        if isinstance(exc, NoPermissionError) or "NOPERM" in str(exc):
            raise ProblemError(403, "This service's Redis user may not access that group's streams") from exc
        raise


def build_routes(bus: EventBus, prefix: str) -> Routes:
    """``GET {prefix}/events/streams``, ``GET {prefix}/events/dead-letters``,
    ``POST {prefix}/events/dead-letters/{entry_id}/replay``, ``POST {prefix}/events/dead-letters/replay``."""
    routes = Routes(prefix=prefix, tags=["events"])
    ops = bus.operations

    @routes.get("/events/streams", query=GroupQuery, response=StreamsOut, operator=True)
    async def event_streams(_request: web.Request, query: GroupQuery) -> StreamsOut:
        """Streams this service produces and consumes, with length, groups, pending, lag and consumers."""
        return StreamsOut(streams=await ops.streams(query.group))

    @routes.get(
        "/events/dead-letters", query=DeadLettersQuery, response=DeadLettersOut, operator=True, errors=(400, 403)
    )
    async def dead_letters(_request: web.Request, query: DeadLettersQuery) -> DeadLettersOut:
        """Dead letters of a consumer group (default: this service's group), oldest first."""
        if query.after is not None and not valid_entry_id(query.after):
            raise ProblemError(400, f"after is not a stream entry id: {query.after}")
        return await _refused_as_403(ops.dead_letters(query.group, query.limit, query.after))

    @routes.post("/events/dead-letters/replay", query=GroupQuery, response=ReplayOut, operator=True, errors=(403,))
    async def replay_all(_request: web.Request, query: GroupQuery) -> ReplayOut:
        """Replay every dead letter of the group."""
        ids = await _refused_as_403(ops.replay_all(query.group))
        group = query.group or bus.rt.service
        return ReplayOut(replayed=len(ids), stream=bus.keys.replay(group), entry_ids=ids)

    @routes.post(
        "/events/dead-letters/{entry_id}/replay",
        query=GroupQuery,
        response=ReplayOut,
        operator=True,
        errors=(403, 404),
    )
    async def replay_one(request: web.Request, query: GroupQuery) -> ReplayOut:
        """Replay one dead letter to the group that dead-lettered it."""
        entry_id = request.match_info["entry_id"]
        if not valid_entry_id(entry_id):
            raise ProblemError(404, f"No dead letter {printable(entry_id)[:64]}")
        new_id = await _refused_as_403(ops.replay(entry_id, query.group))
        if new_id is None:
            raise ProblemError(404, f"No dead letter {entry_id}")
        group = query.group or bus.rt.service
        return ReplayOut(replayed=1, stream=bus.keys.replay(group), entry_ids=[new_id])

    return routes
