"""Settling the entries a consumer holds: batched, pipelined acknowledgements (with the idempotency markers of
the handled events) and dead letters."""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ..redisconn import is_cluster
from .constants import (
    D_DELIVERIES,
    D_ENTRY,
    D_ERROR,
    D_GROUP,
    D_REASON,
    D_STREAM,
    D_TIME,
    D_TRUNCATED,
    F_TYPE,
    MAX_DEAD_FIELD_CHARS,
    MAX_ENTRY_BYTES,
    MAX_ERROR_CHARS,
)
from .envelope import DeadReason, entry_size, format_time
from .idempotency import Claim, Idempotency
from .metrics import BusMetrics, type_label
from .streams import exchange, printable, wire

log = logging.getLogger("novapulse.bus")


@dataclass(slots=True)
class HeldEntry:
    """A stream entry this consumer read (or reclaimed) and has not settled yet — neither acknowledged nor
    dead-lettered. While it is held the consumer renews its lease (see :mod:`.reclaim`).

    ``fields`` is ``None`` when the entry was deleted or trimmed while pending. ``deliveries`` is how many
    times the group delivered it, this delivery included (1 on a first read; Redis's count on a reclaim).
    ``claim`` is the idempotency claim taken for the whole read batch (one round trip) before the handling
    task starts; the first attempt uses it and clears it, later attempts claim again."""

    stream: str
    entry_id: str
    fields: dict[str, str] | None
    deliveries: int
    claim: Claim | None = None


def dead_fields(fields: dict[str, str] | None) -> tuple[dict[bytes, bytes], bool]:
    """The original fields as the bytes that were read (:func:`~.streams.wire`: an entry that is not UTF-8
    is kept as it came), cut down when the entry is over the limit; True when cut."""
    if not fields:
        return {}, False
    try:
        small = entry_size(fields) <= MAX_ENTRY_BYTES
    except UnicodeEncodeError:  # not UTF-8: count bytes as read
        small = sum(len(wire(k)) + len(wire(v)) for k, v in fields.items()) <= MAX_ENTRY_BYTES
    if small:
        return {wire(k): wire(v) for k, v in fields.items()}, False
    return {wire(k[:256]): wire(v[:MAX_DEAD_FIELD_CHARS]) for k, v in itertools.islice(fields.items(), 64)}, True


pack: Any = hiredis.pack_command
"""A command's RESP request (a tuple of str, bytes, int or float); raises ``TypeError`` for other kinds."""


class Settler:
    """Settles the entries of one consumer group.

    :meth:`ack` only queues: :meth:`run` (a worker task) writes what is queued in one pipeline per wake-up —
    the ``SETEX`` idempotency markers of the handled events, then one ``XACK`` per stream — so a busy
    consumer acknowledges hundreds of entries per round trip (on a Redis Cluster: the markers in one round
    trip, then the acknowledgements, since a cluster pipeline keeps no order across nodes). A failed flush
    is logged and dropped: the entries stay pending and are redelivered (and skipped as duplicates when their
    marker was written).
    :meth:`dead_letter` is immediate: ``XADD`` to the group's dead-letter stream and ``XACK`` in one
    pipeline (on a cluster: the ``XADD``, then the ``XACK``); it raises :class:`redis.exceptions.RedisError`
    when Redis fails (the entry then stays pending)."""

    def __init__(
        self,
        redis: Redis,
        group: str,
        *,
        idem: Idempotency | None,
        metrics: BusMetrics,
        dead_stream: str,
        dead_maxlen: int,
    ) -> None:
        self.redis = redis
        self.group = group
        self.idem = idem
        self.metrics = metrics
        self.dead_stream = dead_stream
        self.dead_maxlen = dead_maxlen
        self._acks: dict[str, list[str]] = {}
        self._done: list[str] = []
        self._signal = asyncio.Event()
        self._closing = False

    def ack(self, held: HeldEntry, event_id: str | None = None) -> None:
        """Queue the acknowledgement of ``held`` (and, with ``event_id``, its idempotency marker)."""
        self._acks.setdefault(held.stream, []).append(held.entry_id)
        if event_id is not None and self.idem is not None:
            self._done.append(event_id)
        self._signal.set()

    def reopen(self) -> None:
        """Accept acknowledgements again (a consumer run starts)."""
        self._closing = False

    def close(self) -> None:
        """Ask :meth:`run` to flush what is queued and return."""
        self._closing = True
        self._signal.set()

    async def run(self) -> None:
        """Flush queued acknowledgements whenever some are queued; return once :meth:`close` was called and
        nothing is left."""
        while True:
            await self._signal.wait()
            self._signal.clear()
            try:
                await self.flush()
            except RedisError as exc:
                log.warning("acknowledgement failed; entries will be redelivered", extra={"error": str(exc)})
            if self._closing and not self._acks and not self._done:
                return

    async def flush(self) -> None:
        """Write every queued marker and acknowledgement in one round trip (raises ``RedisError``: the first
        error reply, once every reply is read)."""
        acks, done = self._acks, self._done
        if not acks and not done:
            return
        self._acks, self._done = {}, []
        if is_cluster(self.redis) and self.idem is not None and done:
            # a cluster pipeline sends each node's commands apart, in no set order: the markers go first
            async with self.redis.pipeline(transaction=False) as pipe:
                await self.idem.mark_done(pipe, done)
                await pipe.execute()
            done = []
        if not is_cluster(self.redis):
            # one server: the same commands in the same order, packed in C and read by hand (no redis-py
            # pipeline per flush); like the pipeline, the first error reply is raised once all are read
            parts: list[bytes] = []
            if self.idem is not None and done:
                parts.append(self.idem.pack_mark_done(done))
            group = self.group
            for stream, ids in acks.items():
                parts.append(pack(("XACK", stream, group, *ids)))
            for reply in await exchange(self.redis, b"".join(parts), len(parts)):
                if isinstance(reply, ResponseError):
                    raise reply
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            if self.idem is not None:
                await self.idem.mark_done(pipe, done)
            for stream, ids in acks.items():
                pipe.xack(stream, self.group, *ids)
            await pipe.execute()

    async def dead_letter(self, held: HeldEntry, reason: DeadReason, error: str) -> None:
        """Move ``held`` to the dead-letter stream with ``reason`` and ``error`` (cut to
        :data:`~.constants.MAX_ERROR_CHARS`) and acknowledge it, in one pipeline; count and log it."""
        fields, truncated = dead_fields(held.fields)
        type_ = printable((held.fields or {}).get(F_TYPE, ""))
        extra = {
            D_REASON: str(reason),
            D_ERROR: printable(error[:MAX_ERROR_CHARS]),
            D_STREAM: held.stream,
            D_ENTRY: held.entry_id,
            D_GROUP: self.group,
            D_DELIVERIES: str(held.deliveries),
            D_TIME: format_time(datetime.now(UTC)),
        }
        if truncated:
            extra[D_TRUNCATED] = "1"
        fields.update({k.encode(): v.encode() for k, v in extra.items()})
        if is_cluster(self.redis):  # two slots, two nodes maybe: the dead letter is written before the XACK
            await self.redis.xadd(self.dead_stream, fields, maxlen=self.dead_maxlen, approximate=True)  # type: ignore[arg-type]
            await self.redis.xack(held.stream, self.group, held.entry_id)
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self.dead_stream, fields, maxlen=self.dead_maxlen, approximate=True)  # type: ignore[arg-type]
                pipe.xack(held.stream, self.group, held.entry_id)
                await pipe.execute()
        self.metrics.dead_lettered.labels(held.stream, self.group, type_label(type_), str(reason)).inc()
        log.warning(
            "entry dead-lettered",
            extra={
                "group": self.group,
                "stream": held.stream,
                "entry": held.entry_id,
                "type": type_[:100],
                "reason": str(reason),
                "deliveries": held.deliveries,
                "error": printable(error[:500]),
            },
        )
