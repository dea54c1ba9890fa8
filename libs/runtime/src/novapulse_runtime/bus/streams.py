"""Low-level stream operations shared by the publisher, the relay, the consumer and the operations API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.client import NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .constants import ENVELOPE_FIELDS

log = logging.getLogger("novapulse.bus")

RAW: dict[str, Any] = {NEVER_DECODE: True}
"""Command option: return the reply as bytes. Every read of stream entries, group and consumer names goes
through it, so one entry or name that is not UTF-8 (anyone can ``XADD`` bytes) cannot make the client raise
``UnicodeDecodeError`` halfway through a reply and stop a consumer."""


async def raw(redis: Redis, *args: Any, **options: Any) -> Any:
    """Run a command and return its reply as bytes (:data:`RAW`)."""
    return await redis.execute_command(*args, **RAW, **options)  # type: ignore[no-untyped-call]


Fields = dict[str, str]
Entry = tuple[str, str, Fields | None, str | None]
"""``(stream, entry id, fields or None when the entry was deleted, problem)``; ``problem`` names the fields
that are not UTF-8 (their text then holds lone surrogates standing for the raw bytes, see :func:`text`)."""


def text(value: Any) -> str:
    """Bytes from Redis as text; bytes that are not UTF-8 become lone surrogates (``surrogateescape``), so
    :func:`wire` gives back exactly the bytes read."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def wire(value: str) -> bytes:
    """Text made by :func:`text` back to the original bytes (what we write to Redis for entries we copy)."""
    return value.encode("utf-8", "surrogateescape")


def printable(value: str) -> str:
    """Text safe for JSON and logs: bytes that were not UTF-8 are shown as ``\\xNN``."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_utf8(value: str) -> bool:
    """False when ``value`` holds a lone surrogate (not UTF-8 on the wire)."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


_utf8 = bytes.decode  # strict UTF-8; a C call per field (the hot path of every entry read)


def decode_fields(raw: Mapping[Any, Any] | None) -> tuple[Fields | None, str | None]:
    """Field names and values of an entry read with :data:`RAW` as text, and the problem when some are not
    UTF-8 (``None`` when all are)."""
    if raw is None:
        return None, None
    try:
        return dict(zip(map(_utf8, raw), map(_utf8, raw.values()), strict=True)), None
    except (UnicodeDecodeError, TypeError):
        fields = {text(k): text(v) for k, v in raw.items()}
    bad = [printable(k)[:64] for k, v in fields.items() if not (is_utf8(k) and is_utf8(v))]
    return fields, ("field(s) not UTF-8: " + ", ".join(bad[:8])) if bad else None


def decode_flat(flat: Any) -> tuple[Fields | None, str | None]:
    """An entry's field list as the server sends it (``[name, value, name, value, ...]``, bytes) as text, and
    the problem when it is malformed: not a list, an odd number of items, items that are not bytes, or names
    or values that are not UTF-8 (``None`` when it is well formed). ``None`` (a deleted entry) gives
    ``(None, None)``. A repeated name keeps its last value (as redis-py's reply callback did)."""
    if flat is None:
        return None, None
    if type(flat) is list and not len(flat) & 1:
        items = map(_utf8, flat)  # one pass: names and values alternate
        try:
            return dict(zip(items, items, strict=False)), None
        except (UnicodeDecodeError, TypeError):
            pass
    if not isinstance(flat, list | tuple):
        return {}, f"field list is not an array ({type(flat).__name__})"
    pairs = iter(flat)
    fields, problem = decode_fields(dict(zip(pairs, pairs, strict=False)))
    if len(flat) & 1:
        return fields or {}, f"odd number of field names and values ({len(flat)})"
    if problem is None and not all(isinstance(item, bytes) for item in flat):
        problem = "field(s) not strings"
    return fields, problem


def _flat_entries(stream: str, entries: Any) -> list[Entry]:
    """The entries of one stream of a raw ``XREADGROUP`` reply (``[[id, [name, value, ...]], ...]``). Raises
    ``InvalidResponse`` (a ``RedisError``: the read fails and is retried) for a reply without an entry id to
    acknowledge or dead-letter; a malformed field list is the entry's problem (it is dead-lettered)."""
    if entries is None:
        return []
    if type(entries) is not list:
        raise InvalidResponse(f"XREADGROUP reply: entries of {printable(stream)[:64]} are not an array")
    out: list[Entry] = []
    for item in entries:
        if type(item) is not list or len(item) < 2 or type(item[0]) is not bytes:
            raise InvalidResponse(f"XREADGROUP reply: an entry of {printable(stream)[:64]} is not [id, fields]")
        fields, problem = decode_flat(item[1])
        out.append((stream, text(item[0]), fields, problem))
    return out


def _entries(stream: str, entries: Iterable[Any]) -> list[Entry]:
    out: list[Entry] = []
    for entry_id, raw in entries:
        fields, problem = decode_fields(raw)
        out.append((stream, text(entry_id), fields, problem))
    return out


async def read_group(
    redis: Redis, group: str, consumer: str, streams: Mapping[str, str], count: int, block: int | None
) -> list[Entry]:
    """``XREADGROUP`` read as bytes; the entries of every stream, in order; an entry whose field list is
    malformed (:func:`decode_flat`) carries its problem. Raises ``ResponseError`` (``NOGROUP``, ...),
    ``InvalidResponse`` for a reply of another shape, other ``RedisError`` for connection failures and
    timeouts (the client's socket timeout plus ``block`` ms). On a Redis Cluster the streams
    must share one hash slot; the command goes straight to the node serving it (redis-py would otherwise
    ask a server for the command's keys first, ``COMMAND GETKEYS``: one more round trip per read), so a
    slot that just moved fails this read with ``MOVED`` (a ``RedisError``) and the next one finds the new
    node."""
    args: list[Any] = ["GROUP", group, consumer, "COUNT", count]
    if block is not None:
        args += ["BLOCK", block]
    args += ["STREAMS", *streams.keys(), *streams.values()]
    if not isinstance(redis, RedisCluster):
        # one server: packed in C and read by hand (:func:`exchange`), each entry's flat field list decoded
        # once (:func:`decode_flat`) instead of redis-py's callback building a dict per entry first
        request = hiredis.pack_command(("XREADGROUP", *args))
        (response,) = await exchange(redis, request, 1, extra_timeout=(block or 0) / 1000, as_bytes=True)
        if isinstance(response, ResponseError):
            raise response
        if not response:
            return []
        out: list[Entry] = []
        if isinstance(response, dict):  # RESP3: {stream: entries}
            for stream, entries in response.items():
                out.extend(_flat_entries(text(stream), entries))
            return out
        if type(response) is not list:
            raise InvalidResponse("XREADGROUP reply is not an array")
        for item in response:
            if type(item) is not list or len(item) != 2:
                raise InvalidResponse("XREADGROUP reply: a stream is not [name, entries]")
            out.extend(_flat_entries(text(item[0]), item[1]))
        return out
    options: dict[str, Any] = {}
    with contextlib.suppress(KeyError, RedisError):  # slot map not loaded yet: let redis-py route it
        options["target_nodes"] = redis.get_node_from_key(next(iter(streams)))
    response = await raw(redis, "XREADGROUP", *args, **options)
    if not response:
        return []
    out = []
    items: Iterable[Any] = response.items() if isinstance(response, dict) else response
    for stream, entries in items:
        if isinstance(response, dict):  # RESP3: {stream: [entries]}
            entries = entries[0] if entries and isinstance(entries[0], list) else entries
        out.extend(_entries(text(stream), entries or []))
    return out


async def claim_idle_entries(
    redis: Redis, stream: str, group: str, consumer: str, min_idle_ms: int, count: int
) -> list[Entry]:
    """Up to ``count`` entries of ``group`` pending for at least ``min_idle_ms`` with any consumer, now held by
    ``consumer`` (read as bytes, delivery counts raised by one).

    ``XPENDING … IDLE`` finds them wherever they sit in the group's pending list, then ``XCLAIM`` with the same
    minimum idle time takes those still idle (one renewed or taken by another consumer in between is left
    where it is). Not ``XAUTOCLAIM`` from ``0-0``: it looks at no more than ten times ``count`` pending
    entries (Redis's fixed scan bound), so a consumer with few free slots only ever looked at the oldest
    entries — live consumers' work and retries waiting their turn — and idle entries behind them waited for a
    pass with more free slots (issue 15: recovery after a kill -9 took 2.7-5.3 s instead of ``claim_idle`` +
    ~0.5 s). Entries deleted from the stream meanwhile are dropped from the pending list by ``XCLAIM``
    (Redis 7) and not returned. Needs Redis 6.2 (``IDLE``)."""
    pending = await pending_range(redis, stream, group, "-", "+", count, idle_ms=min_idle_ms)
    if not pending:
        return []
    ids = [p["message_id"] for p in pending]
    response = await raw(redis, "XCLAIM", stream, group, consumer, min_idle_ms, *ids)
    return _entries(stream, [e for e in response or [] if e is not None])


async def read_range(redis: Redis, stream: str, low: str, high: str, count: int) -> list[Entry]:
    """``XRANGE`` read as bytes."""
    response = await raw(redis, "XRANGE", stream, low, high, "COUNT", count)
    return _entries(stream, response or [])


def _texts(item: Mapping[Any, Any]) -> dict[str, Any]:
    return {text(k): text(v) if isinstance(v, bytes | bytearray) else v for k, v in item.items()}


async def consumers_info(redis: Redis, stream: str, group: str | bytes) -> list[dict[str, Any]]:
    """``XINFO CONSUMERS`` with names as text (:func:`text`); ``[]`` when the stream or group is missing."""
    try:
        reply = await raw(redis, "XINFO CONSUMERS", stream, group)
    except ResponseError as exc:
        if is_missing_key(exc):
            return []
        raise
    return [_texts(c) for c in reply or []]


async def pending_summary(redis: Redis, stream: str, group: str | bytes) -> dict[str, Any]:
    """``XPENDING <stream> <group>``: ``pending`` count and ``min``/``max`` ids (text)."""
    reply = await raw(redis, "XPENDING", stream, group)
    return {
        "pending": int(reply.get("pending") or 0),
        "min": text(reply["min"]) if reply.get("min") else None,
        "max": text(reply["max"]) if reply.get("max") else None,
    }


async def pending_range(
    redis: Redis,
    stream: str,
    group: str | bytes,
    low: str,
    high: str,
    count: int,
    consumer: str | None = None,
    *,
    idle_ms: int | None = None,
) -> list[dict[str, Any]]:
    """``XPENDING`` extended form: ``message_id``, ``consumer`` (text), ``times_delivered`` per entry; with
    ``idle_ms`` only entries idle for at least that many milliseconds (Redis 6.2)."""
    args: list[Any] = [stream, group, *(("IDLE", idle_ms) if idle_ms is not None else ()), low, high, count]
    if consumer is not None:
        args.append(consumer)
    reply = await raw(redis, "XPENDING", *args, parse_detail=True)
    return [_texts(p) for p in reply or []]


def _bulk(value: str) -> str:
    """``value`` as a RESP bulk string (its length in UTF-8 bytes; the text is encoded with the rest)."""
    return f"${len(value) if value.isascii() else len(value.encode())}\r\n{value}\r\n"


_NAMES = {name: _bulk(name) for name in ENVELOPE_FIELDS}
"""The envelope's field names, already as bulk strings."""


def pack_xadd(stream: str, entries: Sequence[Mapping[str, str]], tail: Sequence[str] = ()) -> bytes:
    """The RESP request of one ``XADD <stream> * <field> <value> ...`` per entry (ids chosen by Redis), then
    the command ``tail`` (e.g. ``WAIT 1 1000``) when given, as one buffer to write at once.

    Built as one text encoded once (UTF-8, strict) instead of redis-py's per-argument packing, which costs
    three to four times as much per entry (issue 15, README "Where the bus producer's time goes"). Raises
    ``UnicodeEncodeError`` for a value holding a lone surrogate, before anything is sent."""
    head = f"$4\r\nXADD\r\n{_bulk(stream)}$1\r\n*\r\n"
    parts: list[str] = []
    append = parts.append
    names = _NAMES
    for fields in entries:
        append(f"*{2 * len(fields) + 3}\r\n{head}")
        for name, value in fields.items():
            append(names.get(name) or _bulk(name))
            append(f"${len(value) if value.isascii() else len(value.encode())}\r\n{value}\r\n")
    if tail:
        append(f"*{len(tail)}\r\n")
        parts.extend(map(_bulk, tail))
    return "".join(parts).encode()


async def exchange(
    redis: Redis, request: bytes, count: int, *, extra_timeout: float = 0.0, as_bytes: bool = False
) -> list[Any]:
    """Write ``request`` (``count`` packed commands, e.g. from :func:`pack_xadd` or ``hiredis.pack_command``) on
    a pooled connection of ``redis`` (one server, plain or Sentinel-managed; not a cluster client) and read the
    ``count`` replies as the parser gives them, without redis-py's per-command machinery or reply callbacks:
    bytes with ``as_bytes`` (or a client made with ``decode_responses=False``), text otherwise; integers as
    ``int``; an error reply as a ``ResponseError`` object in its place (not raised, so every reply is read
    and the connection stays in step).

    The request is written at once, before this coroutine first waits (:func:`_send`), so a caller that starts
    it eagerly has it on the wire before running anything else. The write and all replies are bounded
    together by the client's socket timeout plus ``extra_timeout`` seconds (a ``BLOCK`` or ``WAIT`` time): a
    ``redis.exceptions.TimeoutError`` after it, the connection closed. Connection
    errors and timeouts are retried by the client's retry policy (the connection closed and the request sent
    again), as redis-py does for one command. A cancelled read closes the connection (redis-py's
    ``read_response``), so no reply is left unread on a pooled connection."""
    pool = redis.connection_pool
    conn: Any = await pool.get_connection()  # type: ignore[no-untyped-call]

    async def attempt() -> list[Any]:
        limit = conn.socket_timeout
        if limit is not None:
            limit += extra_timeout
        out: list[Any] = []
        try:
            async with asyncio.timeout(limit):
                await _send(conn, request)
                for _ in range(count):
                    try:  # math.inf: no timer per reply, the batch has one (a cancelled read closes the connection)
                        out.append(await conn.read_response(disable_decoding=as_bytes, timeout=math.inf))
                    except ResponseError as exc:
                        out.append(exc)
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise RedisTimeoutError(f"Timeout reading the replies of {count} pipelined commands") from None
        return out

    async def failed(error: Exception) -> None:
        await conn.disconnect()

    try:
        replies: list[Any] = await conn.retry.call_with_retry(attempt, failed)
    finally:
        await pool.release(conn)
    return replies


async def _send(conn: Any, request: bytes) -> None:
    """Write ``request`` on ``conn`` as redis-py's ``send_packed_command`` does (connect if needed, the health
    check when due, ``OSError`` as ``ConnectionError``, the connection closed on any failure or
    cancellation), but without its ``asyncio.wait_for`` around the write: on Python 3.11 that is a task per
    write, and the bytes go out only when the event loop next runs it (after whatever the caller does
    next). The write itself never waits unless the socket's buffer is full; the caller bounds it with its
    timer."""
    writer = getattr(conn, "_writer", None)
    if writer is None or not conn.is_connected:
        await conn.send_packed_command(request)  # connects (redis-py's own path)
        return
    await conn.check_health()  # a PING when health_check_interval has passed, else nothing
    try:
        writer.write(request)
        await writer.drain()
    except OSError as exc:
        await conn.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
    except BaseException:
        await conn.disconnect(nowait=True)  # a write cut short leaves the connection out of step
        raise


async def add_batch(
    redis: Redis, stream: str, entries: Sequence[Mapping[str, str]], *, wait: tuple[int, int] | None = None
) -> tuple[list[str], int | None]:
    """``XADD`` each entry to ``stream`` in order, pipelined in one write; with ``wait=(replicas, timeout_ms)``
    followed by ``WAIT replicas timeout_ms`` on the same connection. Returns the entry ids and the ``WAIT``
    reply (replicas that confirmed; ``None`` without ``wait``).

    On one server (plain or Sentinel-managed) the request is packed by :func:`pack_xadd` and sent on a
    pooled connection, replies read as they come, the whole batch bounded by the client's socket timeout
    (plus the ``WAIT`` timeout): a ``redis.exceptions.TimeoutError`` after it, the connection closed. Errors
    and retries are the redis-py pipeline's: the client's retry policy for connection errors and timeouts,
    the first error reply (``ResponseError``) raised once every reply is read. On a Redis Cluster it is a
    redis-py pipeline (commands routed by slot)."""
    if not entries:
        return [], None
    if isinstance(redis, RedisCluster):
        async with redis.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(stream, dict(fields))
            if wait is not None:
                pipe.execute_command("WAIT", *wait)
            replies: list[Any] = await pipe.execute()
        ids = [text(r) for r in replies[: len(entries)]]
        return ids, None if wait is None else int(replies[-1])
    tail = ("WAIT", str(wait[0]), str(wait[1])) if wait is not None else ()
    request = pack_xadd(stream, entries, tail)
    count = len(entries) + (1 if tail else 0)
    replies = await exchange(redis, request, count, extra_timeout=wait[1] / 1000 if wait is not None else 0.0)
    for number, reply in enumerate(replies, 1):
        if isinstance(reply, ResponseError):
            command = "XADD" if number <= len(entries) else "WAIT"
            reply.args = (f"Command # {number} ({command} {stream} ...) of pipeline caused error: {reply}",)
            raise reply
    ids = [text(r) for r in replies[: len(entries)]]
    return ids, None if wait is None else int(replies[-1])


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
    """``XINFO GROUPS`` with names and ids as text (:func:`text`); ``[]`` when the stream is missing or the
    key is not a stream (``WRONGTYPE``: nothing can have a group there)."""
    try:
        reply = await raw(redis, "XINFO GROUPS", stream)
    except ResponseError as exc:
        if is_missing_key(exc) or "WRONGTYPE" in str(exc):
            return []
        raise
    return [_texts(g) for g in reply or []]


async def safe_trim_id(redis: Redis, stream: str) -> str | None:
    """The smallest id any group still needs (its oldest pending entry, else its last-delivered id);
    ``None`` when the stream has no group."""
    bound: tuple[int, int] | None = None
    for g in await groups_info(redis, stream):
        candidate = str(g.get("last-delivered-id") or "0-0")
        if int(g.get("pending") or 0) > 0:
            summary = await pending_summary(redis, stream, wire(str(g["name"])))
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
    return len(await read_range(redis, stream, f"({last}", "+", cap))
