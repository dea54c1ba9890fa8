"""Low-level stream operations shared by the publisher, the relay, the consumer and the operations API."""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

log = logging.getLogger("novapulse.bus")


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def id_age_seconds(entry_id: str) -> float:
    """Seconds since the entry was added (its id's millisecond part)."""
    return max(0.0, time.time() - parse_id(entry_id)[0] / 1000)


def is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


def is_missing_key(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and ("no such key" in str(exc).lower() or "NOGROUP" in str(exc))


async def ensure_group(redis: Redis, stream: str, group: str, start_id: str = "0") -> bool:
    """Create ``group`` on ``stream`` (and the stream) unless it exists; True when created."""
    try:
        await redis.xgroup_create(stream, group, id=start_id, mkstream=True)
        return True
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise


async def groups_info(redis: Redis, stream: str) -> list[dict[str, Any]]:
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
        return groups
    except ResponseError as exc:
        if is_missing_key(exc):
            return []
        raise


async def safe_trim_id(redis: Redis, stream: str) -> str | None:
    """The smallest id any group still needs (its oldest pending entry, else its last-delivered id);
    ``None`` when the stream has no group."""
    bound: tuple[int, int] | None = None
    for g in await groups_info(redis, stream):
        candidate = str(g.get("last-delivered-id") or "0-0")
        if int(g.get("pending") or 0) > 0:
            summary = await redis.xpending(stream, str(g["name"]))
            lowest = summary.get("min")
            if lowest:
                candidate = str(lowest)
        parsed = parse_id(candidate)
        if bound is None or parsed < bound:
            bound = parsed
    return None if bound is None else f"{bound[0]}-{bound[1]}"


async def trim_stream(redis: Redis, stream: str, maxlen: int) -> int:
    """Trim a stream longer than ``maxlen``, approximately, but never past an entry some group has not
    read and acknowledged (``XTRIM MINID ~`` at the groups' safe id). Without any group: ``MAXLEN ~``.
    Returns the number of entries removed."""
    length = int(await redis.xlen(stream))
    if length <= maxlen:
        return 0
    bound = await safe_trim_id(redis, stream)
    if bound is None:
        return int(await redis.xtrim(stream, maxlen=maxlen, approximate=True))
    return int(await redis.xtrim(stream, minid=bound, approximate=True))


async def lag_of(redis: Redis, stream: str, group: dict[str, Any], cap: int = 10_000) -> int | None:
    """Entries not yet delivered to a group: XINFO's ``lag`` on Redis 7, else counted (up to ``cap``)."""
    if "lag" in group:
        value = group["lag"]
        return None if value is None else int(value)
    last = str(group.get("last-delivered-id") or "0-0")
    entries: list[Any] = await redis.xrange(stream, min=f"({last}", max="+", count=cap) or []
    return len(entries)
