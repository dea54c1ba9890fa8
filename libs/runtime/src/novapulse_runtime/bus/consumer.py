"""Consumer groups, reading and dispatch: batched ``XREADGROUP``, the envelope contract, bounded concurrency,
handlers, retries with backoff.

The rest of a consumer's work lives beside it: :mod:`.settle` acknowledges (batched, pipelined) and
dead-letters the entries it holds; :mod:`.reclaim` renews their leases and reclaims the entries of dead
consumers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextvars import Token
from dataclasses import dataclass, replace
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from redis.exceptions import RedisError, ResponseError

from ..catalog import CATALOG
from ..eager import Resume, start_eagerly, start_task_eagerly
from ..process import retry_pause, supervise
from ..redisconn import slot_groups
from ..tracing import attach_span, detach_span
from .constants import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_BLOCK_MS,
    DEFAULT_CLAIM_IDLE,
    DEFAULT_HANDLER_TIMEOUT,
    DEFAULT_IDEMPOTENCY_TTL,
    DEFAULT_MAX_DELIVERIES,
    F_ID,
    F_SOURCE,
    F_TYPE,
    MAX_ERROR_CHARS,
)
from .envelope import (
    DeadReason,
    Event,
    MalformedEntry,
    PermanentError,
    check_envelope,
    decode,
    lookup,
)
from .idempotency import Claim, Idempotency
from .metrics import type_label
from .reclaim import LeaseRenewer, Reclaimer, sleep_or_stop
from .settle import HeldEntry, Settler
from .streams import Entry, ensure_group, is_nogroup, pending_range, printable, read_group
from .tracing import attributes, exports_spans, extract, remote_parent

if TYPE_CHECKING:
    from . import EventBus

log = logging.getLogger("novapulse.bus")

Handler = Callable[[Event], Awaitable[None]]
"""An event handler: ``async def handle(event: Event) -> None``; raising means "retry"."""

_counter = itertools.count()


@dataclass(frozen=True)
class ConsumerOptions:
    """Tuning of one consumer; times in seconds.

    ``concurrency`` 0 means the process's ``QUEUE_CONCURRENCY``; it bounds the handlings in flight, and up to
    one batch more (at most ``concurrency`` entries) may be read ahead, waiting for slots
    (:meth:`Consumer._read_ahead_loop`). ``claim_idle`` (default 15 s,
    :data:`~.constants.DEFAULT_CLAIM_IDLE`; 0 means that default) is how long an entry this consumer read
    but has not acknowledged may go without renewal before another consumer reclaims it; the consumer
    renews every entry it holds (in flight or waiting for a retry) every ``claim_idle / 3`` s while it
    lives, so a handler may run longer than ``claim_idle`` (up to ``handler_timeout``) and a dead or wedged
    consumer's entries are handled by another within ``claim_idle + claim_interval``. ``claim_interval`` 0
    means ``claim_idle / 10`` (between 50 ms and 1 s). ``backoff_base``/``backoff_max``: retry backoff."""

    concurrency: int = 0
    handler_timeout: float = DEFAULT_HANDLER_TIMEOUT
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_max: float = DEFAULT_BACKOFF_MAX
    claim_idle: float = 0.0
    claim_interval: float = 0.0
    block_ms: int = DEFAULT_BLOCK_MS
    idempotent: bool = True
    idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL
    dead_letter_unknown: bool = True
    start_id: str = "0"
    stats_interval: float = 10.0
    name: str = ""


EXPIRE_TICK = 0.25
"""Longest pause, in seconds, between two checks of the handlers' deadlines (``handler_timeout``)."""


def _handler_failure(exc: BaseException) -> tuple[DeadReason, str]:
    """A handler's exception as a failure (``handler_failed``), whatever its class: ``RecursionError``,
    ``SystemExit`` or a ``CancelledError`` the handler raised itself must not take the worker down. Only a
    real cancellation of this task (shutdown) and ``KeyboardInterrupt`` propagate."""
    if isinstance(exc, KeyboardInterrupt):
        raise exc
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise exc
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # a hostile __str__
        text = type(exc).__name__
    return DeadReason.HANDLER_FAILED, text


class Consumer:
    """Handles events of a consumer group. Declare handlers with :meth:`on`, then run :meth:`run` as a
    worker. Streams are those of the producing services of the handled types (from the catalogue), plus
    ``sources``, plus the group's replay stream."""

    def __init__(self, bus: EventBus, group: str, sources: Sequence[str], options: ConsumerOptions) -> None:
        rt = bus.rt
        self.bus = bus
        self.redis = rt.redis
        self.group = group
        self.sources = tuple(sources)
        concurrency = options.concurrency or rt.settings.queue_concurrency
        claim_idle = options.claim_idle if options.claim_idle > 0 else DEFAULT_CLAIM_IDLE
        n = next(_counter)
        name = options.name or f"{socket.gethostname()}-{os.getpid()}" + (f"-{n}" if n else "")
        self.options = replace(options, concurrency=concurrency, claim_idle=claim_idle, name=name)
        self.name = name
        self.concurrency = concurrency
        self.metrics = bus.metrics
        self.tracer = bus.tracer
        self.dead_stream = bus.keys.dead(group)
        self.replay_stream = bus.keys.replay(group)
        # the lease lasts as long as an entry may go unrenewed before another consumer reclaims it
        self.idem = (
            Idempotency(self.redis, bus.keys, group, claim_idle, options.idempotency_ttl)
            if options.idempotent
            else None
        )
        self._exact: dict[str, Handler] = {}
        self._prefixes: list[tuple[str, Handler]] = []
        self._any: Handler | None = None
        self._resolved: dict[str, tuple[Handler, bool] | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.held: dict[tuple[str, str], str | None] = {}
        """Entries read and not yet settled (acknowledged, dead-lettered or given up), by (stream, entry id)
        → their event id (``None`` for an entry without fields): the entries whose leases are renewed."""
        self.settler = Settler(
            self.redis,
            group,
            idem=self.idem,
            metrics=self.metrics,
            dead_stream=self.dead_stream,
            dead_maxlen=bus.dead_maxlen,
        )
        self.renewer = LeaseRenewer(self)
        self.reclaimer = Reclaimer(self)
        self._slot = asyncio.Event()
        self._stop = asyncio.Event()
        self._reserved = 0
        self.reclaim_wanted = 0
        """Idle entries of dead consumers the last reclaim pass found no free slot for: the reads leave that
        many slots to the next pass, so under a steady load reclaimed work is not starved by new entries."""
        """Handling slots held by a read in progress of another loop (Redis Cluster: :meth:`_read_loops`)."""
        self.reading: list[str] = []
        """The streams being read (:meth:`streams` less keys that turned out not to be streams)."""
        self._labels: dict[tuple[str, str], Any] = {}
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        """Handler runs in progress → the event-loop time their ``handler_timeout`` ends (see :meth:`_expire`)."""
        self._expired: set[asyncio.Task[Any]] = set()
        self._producers: dict[tuple[str, str], str | None] = {}
        self._counts: dict[Any, int] | None = None
        """Successes of the ``consumed`` counters not added yet, while :meth:`dispatch` starts a batch."""
        tracing = bus.rt.tracing
        self._shortcut = tracing.shortcut if self.tracer is tracing.tracer else None

    @property
    def renewal_passes(self) -> int:
        """Lease renewal passes done so far (:class:`~.reclaim.LeaseRenewer`)."""
        return self.renewer.passes

    def free_slots(self) -> int:
        """Handling tasks that may start now: ``concurrency`` less those running."""
        return self.concurrency - len(self._tasks)

    # declaration -------------------------------------------------------------------------------------------

    def on(self, pattern: str) -> Callable[[Handler], Handler]:
        """Register a handler for an exact type (``user.registered``), a prefix (``user.*``) or every type
        (``*``). The most specific match wins; one handler runs per event."""

        def register(handler: Handler) -> Handler:
            self.add_handler(pattern, handler)
            return handler

        return register

    def add_handler(self, pattern: str, handler: Handler) -> None:
        """Same as :meth:`on`, without the decorator."""
        if pattern == "*":
            self._any = handler
        elif pattern.endswith(".*"):
            self._prefixes.append((pattern[:-1], handler))
            self._prefixes.sort(key=lambda p: len(p[0]), reverse=True)
        elif "*" in pattern:
            raise ValueError(f"unsupported pattern {pattern!r}: use 'a.b', 'a.*' or '*'")
        elif lookup(pattern) is None:
            raise ValueError(f"{pattern!r} is not in the event catalogue: only catalogue types are delivered")
        else:
            self._exact[pattern] = handler
        self._resolved.clear()

    def streams(self) -> list[str]:
        """The streams this consumer reads."""
        sources = set(self.sources)
        types = CATALOG.all_types()
        for name in self._exact:
            et = lookup(name)
            if et is not None:
                sources.add(et.source)
        for prefix, _ in self._prefixes:
            sources.update(et.source for et in types if et.name.startswith(prefix))
        if self._any is not None and not self.sources:
            sources.update(et.source for et in types)
        return [*sorted(self.bus.keys.stream(s) for s in sources), self.replay_stream]

    def _resolve(self, type_: str) -> tuple[Handler, bool] | None:
        """The handler of a catalogue type and its ``as_model`` flag: True when the handler gets ``data`` as
        the type's catalogue model (exact and prefix handlers), False when it gets a dict (the ``*``
        handler); ``None`` when no handler matches."""
        if type_ in self._resolved:
            return self._resolved[type_]
        found: tuple[Handler, bool] | None = None
        exact = self._exact.get(type_)
        if exact is not None:
            found = (exact, True)
        else:
            for prefix, handler in self._prefixes:
                if type_.startswith(prefix):
                    found = (handler, True)
                    break
        if found is None and self._any is not None:
            found = (self._any, False)
        self._resolved[type_] = found
        return found

    def _producer(self, stream: str, type_: str) -> str | None:
        """The catalogue producer of ``type_`` when ``stream`` may carry it (the producer's stream, or this
        group's replay stream); ``""`` when the stream may not; ``None`` for a type outside the catalogue.
        Cached per (stream, type) for catalogue types only, so foreign type names cannot grow the cache."""
        key = (stream, type_)
        if key in self._producers:
            return self._producers[key]
        et = lookup(type_)
        if et is None:
            return None
        allowed = stream == self.replay_stream or stream == self.bus.keys.stream(et.source)
        found = self._producers[key] = et.source if allowed else ""
        return found

    def _contract(self, stream: str, fields: dict[str, str]) -> tuple[DeadReason, str] | None:
        """The envelope checks that need no parsing, for every entry whatever the handlers: the type is in
        the catalogue, the entry is on its producer's stream and ``source`` names that producer. (Data
        validation and the organisation check run in :func:`~.envelope.decode`.)"""
        type_ = fields[F_TYPE]
        producer = self._producer(stream, type_)
        if producer is None:
            return DeadReason.UNKNOWN_TYPE, f"unknown event type {printable(type_)[:100]!r}"
        if not producer:
            et = lookup(type_)
            expected = self.bus.keys.stream(et.source) if et is not None else "?"
            return DeadReason.WRONG_STREAM, f"{type_} is published on {expected} only, not on {stream}"
        if fields[F_SOURCE] != producer:
            return DeadReason.WRONG_SOURCE, f"{type_} comes from {producer}, not {printable(fields[F_SOURCE])[:100]!r}"
        return None

    # running -----------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then stop reading, release the entries read ahead and not started
        (:meth:`_release`), let in-flight handlers finish (entries waiting for a retry stay pending and are
        reclaimed later), flush acknowledgements and return. Raises
        ``ValueError`` when no handler was declared. Redis failures are logged and retried, never raised."""
        self._stop = stop
        self.reading = self.streams()
        if len(self.reading) == 1 and not self._exact and not self._prefixes and self._any is None:
            raise ValueError(f"consumer {self.group} has no handlers")
        if not await self._ensure_groups_until_ready(stop):
            return
        self.settler.reopen()
        ack_task = asyncio.create_task(
            supervise(f"bus-ack-{self.group}", self.settler.run, stop, until_return=True), name=f"bus-ack-{self.group}"
        )
        claim_task = asyncio.create_task(
            supervise(f"bus-claim-{self.group}", lambda: self.reclaimer.run(stop), stop),
            name=f"bus-claim-{self.group}",
        )
        # renewal goes on while in-flight handlers finish after ``stop``: it is cancelled once they are done
        renew_task = asyncio.create_task(
            supervise(f"bus-renew-{self.group}", self.renewer.run, asyncio.Event()), name=f"bus-renew-{self.group}"
        )
        # like renewal, handler timeouts are enforced until the in-flight handlers are done
        expire_task = asyncio.create_task(
            supervise(f"bus-timeout-{self.group}", self._expire, asyncio.Event()), name=f"bus-timeout-{self.group}"
        )
        log.info("consumer started", extra={"group": self.group, "consumer": self.name, "streams": self.reading})
        try:
            await supervise(f"bus-read-{self.group}", lambda: self._read_loops(stop), stop)
        finally:
            claim_task.cancel()
            if self._tasks:
                _, pending = await asyncio.wait(set(self._tasks), timeout=self.options.handler_timeout + 2.0)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=2.0)
            renew_task.cancel()
            expire_task.cancel()
            self.settler.close()
            try:
                await asyncio.wait_for(ack_task, timeout=10.0)
            except (TimeoutError, RedisError):  # pragma: no cover - the ack loop logs and retries its own errors
                log.warning("could not flush acknowledgements at shutdown", extra={"group": self.group})
            await asyncio.gather(claim_task, renew_task, expire_task, return_exceptions=True)
            log.info("consumer stopped", extra={"group": self.group, "consumer": self.name})

    async def _ensure_groups(self) -> None:
        """Create the group (and consumer) on every stream read. A key that is not a stream (``WRONGTYPE``:
        written by someone else) is logged at ERROR and left out until the process restarts, so it cannot
        stop the reading of the other streams (one ``XREADGROUP`` covers them all)."""
        for stream in list(self.reading):
            try:
                created = await ensure_group(self.redis, stream, self.group, self.options.start_id)
            except ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                log.error(
                    "key is not a stream; not reading it until restarted",
                    extra={"group": self.group, "stream": stream},
                )
                self.reading.remove(stream)
                continue
            if created:
                log.info("created consumer group", extra={"stream": stream, "group": self.group})
            # listed at once (XREADGROUP alone registers a consumer only when it gets an entry)
            await self.redis.xgroup_createconsumer(stream, self.group, self.name)

    async def recreate_groups(self) -> bool:
        """After ``NOGROUP``: re-create the groups; False (logged) when Redis refuses."""
        log.warning("consumer group missing; re-creating it", extra={"group": self.group})
        try:
            await self._ensure_groups()
        except RedisError as exc:
            log.warning("cannot re-create consumer groups", extra={"group": self.group, "error": str(exc)})
            return False
        return True

    async def _ensure_groups_until_ready(self, stop: asyncio.Event) -> bool:
        failures = 0
        while not stop.is_set():
            try:
                await self._ensure_groups()
                return True
            except RedisError as exc:
                failures += 1
                log.warning("cannot create consumer groups yet", extra={"group": self.group, "error": str(exc)})
                await sleep_or_stop(retry_pause(failures, 0.1, 5.0), stop)
        return False

    async def _read_loops(self, stop: asyncio.Event) -> None:
        """Read until ``stop``: one ``XREADGROUP`` over every stream on a single server (or a cluster whose
        streams share one slot), reading the next batch ahead (:meth:`_read_ahead_loop`); on a Redis Cluster,
        where one command may only touch one hash slot, one read loop per slot (each stream is its own slot).
        Each of those loops first reads without blocking, up to every free handling slot not already taken
        by another loop's read, and only when its streams are empty blocks for a single entry; so one busy
        stream can fill every slot, and the handlers running exceed ``concurrency`` by at most one entry per
        other loop (a blocked read that returns)."""
        parts = slot_groups(self.redis, self.reading)
        if len(parts) <= 1:
            await self._read_ahead_loop(stop)
            return
        async with asyncio.TaskGroup() as tasks:
            for part in parts:
                tasks.create_task(self._read_loop(stop, part))

    async def _read_ahead_loop(self, stop: asyncio.Event) -> None:
        """Read every stream with one ``XREADGROUP`` and start the handlings, the next batch read ahead while
        the current one's handlings run: a batch waits only for its idempotency claims (one round trip,
        written first so Redis answers them before anything else of this consumer's), then the read-ahead's
        ``XREADGROUP`` is written at once (:func:`~novapulse_runtime.eager.start_task_eagerly`), before the
        handlings start, and Redis reads the next batch while they run.

        Prefetch, as AMQP's ``basic.qos``: at most one batch is read ahead, of up to ``concurrency`` less the
        handlings still running from earlier batches (those of the batch being started are expected to
        finish first; with slow handlers few slots are free, so little is read ahead and other consumers of
        the group get the rest), and only after a read that returned all it asked for (at low rates, when a
        read drains the streams, a read-ahead would come back empty: one round trip more per batch).
        ``concurrency`` still bounds the handlings in flight: an entry read ahead starts only when a slot is
        free, and waits meanwhile. A waiting entry is pending in this consumer's PEL like any entry read:
        held, so its lease is renewed while it waits, reclaimed by another consumer after ``claim_idle`` if
        the process dies. The read-ahead never blocks (``BLOCK`` is used only when
        nothing was read ahead), so ``stop`` is seen at once; entries still waiting at ``stop`` are not
        handled but released (:meth:`_release`): left pending with their idle time set to ``claim_idle``,
        so the group's reclaimers hand them to another consumer at their next pass."""
        failures = 0
        streams: dict[Any, Any] = dict.fromkeys(self.reading, ">")
        low_water = max(1, self.concurrency // 4)  # as in _read_loop
        ahead: asyncio.Future[list[Entry]] | None = None
        asked = 0  # the COUNT of the read in ``ahead``
        more = False  # the last read returned all it asked for: the streams may hold more
        waiting: list[Entry] = []
        """Entries read ahead, not started yet (held: see :meth:`_read_ahead`)."""
        try:
            while not stop.is_set():
                if not waiting:
                    try:
                        if ahead is not None:
                            done, ahead = ahead, None
                            waiting = await done
                            more = len(waiting) >= asked
                        if not waiting:
                            free = await self._room_to_read(bool(streams), low_water, stop)
                            if not free:
                                continue
                            waiting = await read_group(
                                self.redis, self.group, self.name, streams, free, self.options.block_ms
                            )
                            more = len(waiting) >= free
                        failures = 0
                    except RedisError as exc:
                        after = await self._read_failed(exc, failures, stop)
                        if after is None:
                            streams = dict.fromkeys(self.reading, ">")
                        else:
                            failures = after
                        continue
                    if not waiting:
                        continue
                free = self.free_slots() - self.reclaim_wanted
                if free < min(low_water, len(waiting)):
                    await self._wait_slot(stop)
                    continue
                start, waiting = waiting[:free], waiting[free:]
                held = self.held
                for stream, entry_id, _, _ in start:  # from here on, held as in-flight handlings are (spawn)
                    held.pop((stream, entry_id), None)
                ready = self._prepare(start, {})
                await self._claim(ready)
                room = self.concurrency - len(self._tasks) - self.reclaim_wanted
                if more and not waiting and room > 0 and not stop.is_set():
                    asked = room
                    ahead = start_task_eagerly(self._read_ahead(streams, room))
                await self._start(ready)
        finally:
            if ahead is not None:
                # a failed read-ahead: what it read, if anything, stays pending and is reclaimed after claim_idle
                with contextlib.suppress(RedisError):
                    waiting.extend(await ahead)
            if waiting:
                await self._release(waiting)

    async def _read_ahead(self, streams: dict[Any, Any], count: int) -> list[Entry]:
        """Read up to ``count`` entries without blocking; the entries read are held (their leases renewed)
        until started or released."""
        batch = await read_group(self.redis, self.group, self.name, streams, count, None)
        held = self.held
        for stream, entry_id, fields, _ in batch:
            held[(stream, entry_id)] = fields.get(F_ID) if fields else None
        return batch

    async def _release(self, entries: Sequence[Entry]) -> None:
        """Give back entries read but not started (at ``stop``): they stay pending in this consumer's PEL, their
        idle time set to ``claim_idle`` (``XCLAIM ... IDLE ... JUSTID``: no delivery counted), so another
        consumer's reclaimer takes them at its next pass instead of ``claim_idle`` later. A Redis failure is
        logged: they are then reclaimed after ``claim_idle``, as the entries of a dead consumer."""
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id, _, _ in entries:
            self.held.pop((stream, entry_id), None)
            by_stream.setdefault(stream, []).append(entry_id)
        idle_ms = int(self.options.claim_idle * 1000)
        try:
            for stream, ids in by_stream.items():
                await self.redis.execute_command(  # type: ignore[no-untyped-call]
                    "XCLAIM", stream, self.group, self.name, 0, *ids, "IDLE", idle_ms, "JUSTID"
                )
        except RedisError as exc:
            log.warning(
                "could not release entries read ahead; they are reclaimed after claim_idle",
                extra={"group": self.group, "count": len(entries), "error": str(exc)},
            )
            return
        log.info("released entries read ahead at stop", extra={"group": self.group, "count": len(entries)})

    async def _read_failed(self, exc: RedisError, failures: int, stop: asyncio.Event) -> int | None:
        """After a failed ``XREADGROUP``: ``None`` when a missing group (``NOGROUP``) or a key that is not a
        stream (``WRONGTYPE``) was repaired by re-creating the groups (read again at once, over the streams
        still read); else the count of failures in a row, after a pause that grows with it (logged)."""
        if (is_nogroup(exc) or "WRONGTYPE" in str(exc)) and await self.recreate_groups():
            return None
        failures += 1
        log.warning(
            "stream read failed; retrying", extra={"group": self.group, "error": str(exc), "failures": failures}
        )
        await sleep_or_stop(retry_pause(failures, 0.05, 5.0), stop)
        return failures

    async def _room_to_read(self, streams: bool, low_water: int, stop: asyncio.Event) -> int:
        """How many entries a read may ask for now: the free slots less those held back (the other read
        loops' reads under way, the reclaim's ``reclaim_wanted``); 0, after waiting for a slot to free (fewer
        than ``low_water``) or a second (``streams`` false: every key read was something else than a
        stream), when the caller should look again instead."""
        free = self.free_slots() - self._reserved - self.reclaim_wanted
        if free < low_water:
            await self._wait_slot(stop)
            return 0
        if not streams:
            await sleep_or_stop(1.0, stop)
            return 0
        return free

    def wake_readers(self) -> None:
        """Let the read loops waiting for a free slot look again (slots held back for the reclaimer freed)."""
        self._slot.set()

    async def _wait_slot(self, stop: asyncio.Event) -> None:
        """Wait until a handling ends or ``stop`` is set."""
        self._slot.clear()
        waiter = asyncio.ensure_future(stop.wait())
        slot = asyncio.ensure_future(self._slot.wait())
        await asyncio.wait({waiter, slot}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        slot.cancel()

    async def _read_loop(self, stop: asyncio.Event, part: Sequence[str]) -> None:
        """Read the streams of ``part`` (one hash slot of a Redis Cluster) with ``XREADGROUP`` and dispatch
        them, beside the loops of the other slots (see :meth:`_read_loops`)."""
        failures = 0
        own = list(part)
        streams: dict[Any, Any] = dict.fromkeys(own, ">")
        # read again once a quarter of the slots are free: reading whenever one slot frees would degrade
        # into one-entry reads under load
        low_water = max(1, self.concurrency // 4)
        while not stop.is_set():
            free = await self._room_to_read(bool(streams), low_water, stop)
            if not free:
                continue
            try:
                self._reserved += free  # until dispatched: the other loops' non-blocking reads leave them
                try:
                    batch = await read_group(self.redis, self.group, self.name, streams, free, None)
                    if batch:
                        await self.dispatch(batch, {})
                finally:
                    self._reserved -= free
                    self._slot.set()  # a loop waiting for free slots looks again
                if batch:
                    failures = 0
                    continue
                batch = await read_group(self.redis, self.group, self.name, streams, 1, self.options.block_ms)
                failures = 0
            except RedisError as exc:
                after = await self._read_failed(exc, failures, stop)
                if after is None:
                    streams = dict.fromkeys([s for s in own if s in self.reading], ">")
                else:
                    failures = after
                continue
            if batch:
                await self.dispatch(batch, {})

    async def dispatch(self, batch: Sequence[Entry], deliveries: dict[str, int]) -> None:
        """Start the handling of entries just read (``deliveries``: counts of reclaimed entries by id)."""
        await self._start(self._prepare(batch, deliveries))

    def _prepare(self, batch: Sequence[Entry], deliveries: dict[str, int]) -> list[tuple[HeldEntry, Handler, bool]]:
        """The first, synchronous half of :meth:`dispatch`: settle at once the entries no handler will run
        (deleted, malformed, outside the contract, of a type this group does not handle) and return the
        others with their handlers, for :meth:`_start`."""
        ready: list[tuple[HeldEntry, Handler, bool]] = []
        for stream, entry_id, fields, problem in batch:
            held = HeldEntry(stream, entry_id, fields, deliveries.get(entry_id, 1))
            if not fields:  # deleted or trimmed while pending
                self.settler.ack(held)
                continue
            try:
                if problem is not None:
                    raise MalformedEntry(DeadReason.MALFORMED, problem)
                check_envelope(fields)
            except MalformedEntry as exc:
                self.spawn(held, self.settler.dead_letter(held, exc.reason, str(exc)))
                continue
            broken = self._contract(stream, fields)
            if broken is not None:
                if broken[0] is DeadReason.UNKNOWN_TYPE and not self.options.dead_letter_unknown:
                    self.settler.ack(held)
                else:
                    self.spawn(held, self.settler.dead_letter(held, *broken))
                continue
            resolved = self._resolve(fields[F_TYPE])
            if resolved is None:
                self.settler.ack(held)  # a type this group does not handle
                continue
            ready.append((held, *resolved))
        return ready

    async def _claim(self, ready: list[tuple[HeldEntry, Handler, bool]]) -> None:
        """Take the idempotency claims of the entries of ``ready`` not claimed yet, in one round trip, into
        their ``claim``; on a Redis failure they stay unclaimed (each handling then claims on its own)."""
        if self.idem is None:
            return
        todo = [(held, held.fields[F_ID]) for held, _, _ in ready if held.claim is None and held.fields]
        if not todo:
            return
        try:
            claims = await self.idem.claim_many([event_id for _, event_id in todo])
        except RedisError:
            return
        for (held, _), claim in zip(todo, claims, strict=False):
            held.claim = claim

    async def _start(self, ready: list[tuple[HeldEntry, Handler, bool]]) -> None:
        """The second half of :meth:`dispatch`: take the idempotency claims of ``ready`` not taken yet
        (:meth:`_claim`: one round trip), then start their handlings."""
        await self._claim(ready)
        # handlings that finish without waiting count their successes here, added once per counter after the
        # loop (no await in between, so nothing on the event loop sees the counts in the meantime)
        counts: dict[Any, int] = {}
        self._counts = counts
        try:
            for held, handler, as_model in ready:
                self.spawn(held, self._process(held, handler, as_model))
        finally:
            self._counts = None
            for counter, n in counts.items():
                counter.inc(n)

    def spawn(self, held: HeldEntry, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (the handling or dead-lettering of ``held``) at once, up to its first wait, and as a
        task from there (:func:`~novapulse_runtime.eager.start_eagerly`): a handler that finishes without
        waiting costs no task. From its first wait until it ends, ``held`` counts as held (its lease is
        renewed) and takes a slot; before that first wait nothing else runs on the event loop (no renewal, no
        reclaim, no read), so an entry settled without waiting is never registered at all."""
        try:
            task = start_eagerly(work)
        except Exception as exc:  # a fault of the bus itself (the handler's own are failures, see _handle)
            log.error("event task failed", extra={"group": self.group, "error": repr(exc)})
            task = None
        if task is None:
            self._slot.set()
            return
        key = (held.stream, held.entry_id)
        self.held[key] = held.fields.get(F_ID) if held.fields else None
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self.held.pop(key, None)
            self._slot.set()
            if not t.cancelled() and t.exception() is not None:
                log.error("event task failed", extra={"group": self.group, "error": repr(t.exception())})

        task.add_done_callback(done)

    async def _finish_broken(self, held: HeldEntry, exc: BaseException) -> None:
        """Last resort for a fault of the bus itself while handling an entry: dead-letter it (reason
        ``handler_failed``, with the error) rather than leave it pending for ever."""
        log.error(
            "event processing failed unexpectedly; dead-lettering the entry",
            exc_info=exc,
            extra={"group": self.group, "stream": held.stream, "entry": held.entry_id},
        )
        try:
            await self.settler.dead_letter(held, DeadReason.HANDLER_FAILED, f"bus error: {type(exc).__name__}: {exc}")
        except RedisError as again:
            log.warning("could not dead-letter; the entry stays pending", extra={"error": str(again)})

    def _label(self, stream: str, type_: str) -> Any:
        key = (stream, type_)
        found = self._labels.get(key)
        if found is None:
            label = type_label(type_)
            found = self._labels[key] = (
                self.metrics.consumed.labels(stream, self.group, label),
                self.metrics.handler_duration.labels(self.group, label),
            )
        return found

    async def _process(self, held: HeldEntry, handler: Handler, as_model: bool) -> None:
        """Handle ``held`` to the end (``as_model``: see :meth:`_resolve`); a Redis failure leaves it pending,
        any other fault of the bus dead-letters it. (One coroutine per event: the handling is inline rather
        than in a second coroutine under this one's ``try``.)"""
        try:
            assert held.fields is not None
            event_id = held.fields[F_ID]
            try:
                event = decode(
                    held.fields,
                    stream=held.stream,
                    entry_id=held.entry_id,
                    deliveries=held.deliveries,
                    typed=as_model,
                    checked=True,
                )
            except MalformedEntry as exc:
                if held.claim is Claim.NEW and self.idem is not None:
                    await self.idem.release(event_id)
                await self.settler.dead_letter(held, exc.reason, str(exc))
                return
            while True:
                if self.idem is not None:
                    claim = held.claim or await self.idem.claim(event_id)
                    held.claim = None
                    if claim is Claim.DONE:
                        self.metrics.duplicates.labels(held.stream, self.group).inc()
                        self.settler.ack(held)
                        return
                    if claim is Claim.BUSY:  # another copy of this event is being handled right now
                        if await sleep_or_stop(0.05 + random.random() * 0.05, self._stop):
                            return
                        continue
                failure = await self._handle(handler, event)
                if failure is None:
                    self.settler.ack(held, event_id)
                    return
                reason, error = failure
                self.metrics.failed.labels(held.stream, self.group, type_label(event.type)).inc()
                if self.idem is not None:
                    await self.idem.release(event_id)
                if held.deliveries >= self.options.max_deliveries or reason is DeadReason.REJECTED:
                    await self.settler.dead_letter(held, reason, error)
                    return
                self.metrics.retried.labels(held.stream, self.group, type_label(event.type)).inc()
                if await sleep_or_stop(self._backoff(held.deliveries), self._stop):
                    return  # stopping: the entry stays pending and is reclaimed later
                if not await self._owns(held.stream, held.entry_id):
                    return  # taken over by another consumer (this one stopped renewing for claim_idle)
                claimed = await self.redis.xclaim(
                    held.stream, self.group, self.name, min_idle_time=0, message_ids=[held.entry_id]
                )
                if not claimed or not claimed[0][1]:
                    return  # trimmed
                held.deliveries += 1
                event = replace(event, deliveries=held.deliveries)
        except RedisError as exc:
            log.warning(
                "lost contact with Redis while handling; the entry stays pending",
                extra={"group": self.group, "entry": held.entry_id, "error": str(exc)},
            )
        except Exception as exc:
            await self._finish_broken(held, exc)

    def expire_tick(self) -> float:
        """Seconds between two passes of :meth:`_expire`: a handler is cancelled at most this late."""
        return min(EXPIRE_TICK, self.options.handler_timeout / 4)

    async def _expire(self) -> None:
        """Cancel every handler run past its ``handler_timeout`` (checked every :meth:`expire_tick` seconds).

        One timer for the whole consumer instead of one ``asyncio.timeout`` per event: at thousands of events
        per second, scheduling and cancelling a timer handle per event was a tenth of the consumer's CPU.
        :meth:`_handle` turns the cancellation into a ``timeout`` failure."""
        loop = asyncio.get_running_loop()
        tick = self.expire_tick()
        while True:
            await asyncio.sleep(tick)
            if not self._deadlines:
                continue
            now = loop.time()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    async def _owns(self, stream: str, entry_id: str) -> bool:
        """True when the entry is still pending and delivered to this consumer."""
        return bool(await pending_range(self.redis, stream, self.group, entry_id, entry_id, 1, consumer=self.name))

    def _backoff(self, deliveries: int) -> float:
        """Seconds before retry ``deliveries + 1``: exponential with full jitter, capped at ``backoff_max``
        (not by ``claim_idle``: the waiting entry is renewed like one in flight)."""
        ceiling = min(self.options.backoff_max, self.options.backoff_base * 2 ** (deliveries - 1))
        return float(ceiling / 2 + random.random() * ceiling / 2)

    def _track(self, started: float) -> asyncio.Task[Any]:
        """Put the current task (a handler run that began at ``started``, ``time.perf_counter()`` seconds)
        under :meth:`_expire`'s watch until ``handler_timeout`` after ``started``; returns the task."""
        task = asyncio.current_task()
        assert task is not None
        elapsed = time.perf_counter() - started
        self._deadlines[task] = asyncio.get_running_loop().time() + self.options.handler_timeout - elapsed
        return task

    async def _handle(self, handler: Handler, event: Event) -> tuple[DeadReason, str] | None:
        """Run ``handler`` once on ``event`` within ``handler_timeout`` seconds, in the producer's trace
        context, inside a ``process <stream>`` consumer span when spans are exported (else no span is
        recorded). Returns ``None`` on success, else the failure: ``timeout``, ``rejected`` (the handler
        raised :class:`~.envelope.PermanentError`) or ``handler_failed`` (any other exception)."""
        consumed, duration = self._label(event.stream, event.type)
        started = time.perf_counter()
        failure: tuple[DeadReason, str] | None = None
        span: Span | None = None
        token: Token[otel_context.Context] | None = None
        tracer = self.tracer
        if tracer is not None:
            if not exports_spans(self.bus.rt.tracing.provider):
                # without a span, the handler still runs in the producer's trace context
                parent = extract(event.traceparent, event.tracestate)
                token = otel_context.attach(parent) if parent is not None else None
            else:
                attrs = attributes(event.stream, "process", event.id, self.group, deliveries=event.deliveries)
                shortcut = self._shortcut
                if shortcut is not None:  # the SDK's decision and span at a fraction of its cost (SamplingShortcut)
                    span = shortcut.start(
                        f"process {event.stream}",
                        remote_parent(event.traceparent, event.tracestate),
                        SpanKind.CONSUMER,
                        attrs,
                    )
                else:
                    span = tracer.start_span(
                        f"process {event.stream}",
                        context=extract(event.traceparent, event.tracestate),
                        kind=SpanKind.CONSUMER,
                        attributes=attrs,
                        record_exception=False,
                        set_status_on_exception=False,
                    )
                token = attach_span(span)
                if not span.is_recording():
                    span = None
        try:
            task: asyncio.Task[Any] | None = None
            expired = False
            try:
                try:
                    run = handler(event)
                    if type(run) is CoroutineType:
                        # the handler's first step by hand: one that finishes without waiting (most, on a busy
                        # bus) cannot be cancelled, so it needs no deadline; one that waits gets it now, less
                        # the time its first step took
                        try:
                            yielded = run.send(None)
                        except StopIteration:
                            pass
                        else:
                            task = self._track(started)
                            await Resume(run, yielded)
                    else:  # another awaitable
                        task = self._track(started)
                        await run
                finally:  # no await from here on: _expire can no longer cancel this run
                    if task is not None:
                        del self._deadlines[task]
                        if task in self._expired:  # cancelled by _expire: take our cancellation back
                            self._expired.discard(task)
                            task.uncancel()
                            expired = True
            except asyncio.CancelledError as exc:
                if task is None or not expired:
                    failure = _handler_failure(exc)  # re-raises a real cancellation (shutdown)
                elif task.cancelling():
                    raise  # a shutdown's cancellation on top of ours
                else:
                    failure = (DeadReason.TIMEOUT, f"handler timed out after {self.options.handler_timeout}s")
            except PermanentError as exc:
                failure = (DeadReason.REJECTED, f"{type(exc).__name__}: {exc}")
            except BaseException as exc:
                failure = _handler_failure(exc)
                if span is not None:
                    span.record_exception(exc)
            if span is not None and failure is not None:
                span.set_status(Status(StatusCode.ERROR, failure[1]))
        finally:
            if token is not None:
                detach_span(token)
            if span is not None:
                span.end()
        duration.observe(time.perf_counter() - started)
        if failure is None:
            counts = self._counts
            if counts is not None:  # within dispatch's loop (see there)
                counts[consumed] = counts.get(consumed, 0) + 1
            else:
                consumed.inc()
        else:
            log.warning(
                "event handler failed",
                extra={
                    "group": self.group,
                    "type": event.type,
                    "event_id": event.id,
                    "deliveries": event.deliveries,
                    "error": failure[1][:MAX_ERROR_CHARS],
                },
            )
        return failure
