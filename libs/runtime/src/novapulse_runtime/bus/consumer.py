"""Consumer groups: batched XREADGROUP, bounded concurrency, pipelined XACK, retries, dead letters, lease
renewal of held entries, reclaim."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode
from redis.exceptions import RedisError, ResponseError

from ..catalog import CATALOG
from ..process import supervise
from .constants import (
    D_DELIVERIES,
    D_ENTRY,
    D_ERROR,
    D_GROUP,
    D_REASON,
    D_STREAM,
    D_TIME,
    D_TRUNCATED,
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
    FORGET_CONSUMER_AFTER,
    MAX_DEAD_FIELD_CHARS,
    MAX_ENTRY_BYTES,
    MAX_ERROR_CHARS,
    RENEW_FRACTION,
)
from .envelope import (
    DeadReason,
    Event,
    MalformedEntry,
    PermanentError,
    check_envelope,
    decode,
    entry_size,
    format_time,
    lookup,
)
from .idempotency import Claim, Idempotency
from .metrics import type_label
from .streams import (
    Entry,
    autoclaim,
    consumers_info,
    ensure_group,
    groups_info,
    is_nogroup,
    lag_of,
    pending_range,
    printable,
    read_group,
    wire,
)
from .tracing import attributes, exports_spans, extract

_RENEW = """
local renewed = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if #p > 0 and tonumber(p[1][3]) < tonumber(ARGV[3]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    renewed[#renewed + 1] = id
  end
end
return renewed
"""
"""Renew, atomically, the entries of one stream (KEYS[1]) that group ARGV[1] still delivers to consumer
ARGV[2] and that have been idle less than ARGV[3] ms (ids: ARGV[4..]): reset their idle time with
``XCLAIM … JUSTID`` (no delivery counted). Returns the ids renewed. Checking and claiming in one script means
an entry another consumer took over in between is never taken back."""

if TYPE_CHECKING:
    from . import EventBus

log = logging.getLogger("novapulse.bus")

Handler = Callable[[Event], Awaitable[None]]
"""An event handler: ``async def handle(event: Event) -> None``; raising means "retry"."""

_counter = itertools.count()


@dataclass(frozen=True)
class ConsumerOptions:
    """Tuning of one consumer; times in seconds.

    ``concurrency`` 0 means the process's ``QUEUE_CONCURRENCY``. ``claim_idle`` (default 15 s,
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


@dataclass(slots=True)
class _Held:
    stream: str
    entry_id: str
    fields: dict[str, str] | None
    deliveries: int
    claim: Claim | None = None


def _dead_fields(fields: dict[str, str] | None) -> tuple[dict[bytes, bytes], bool]:
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
        # entries read and not yet settled (acknowledged, dead-lettered or given up) → their event id
        self._held: dict[tuple[str, str], str | None] = {}
        self.renewal_passes = 0
        self._renew_script = self.redis.register_script(_RENEW)
        self._slot = asyncio.Event()
        self._acks: dict[str, list[str]] = {}
        self._done: list[str] = []
        self._ack_signal = asyncio.Event()
        self._closing = False
        self._stop = asyncio.Event()
        self._streams: list[str] = []
        self._labels: dict[tuple[str, str], Any] = {}
        self._producers: dict[tuple[str, str], str | None] = {}

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
        """The handler of a catalogue type (and whether it gets the model rather than a dict)."""
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
        """Consume until ``stop`` is set; then stop reading, let in-flight handlers finish (entries waiting
        for a retry stay pending and are reclaimed later), flush acknowledgements and return."""
        self._stop = stop
        self._streams = self.streams()
        if len(self._streams) == 1 and not self._exact and not self._prefixes and self._any is None:
            raise ValueError(f"consumer {self.group} has no handlers")
        if not await self._ensure_groups_until_ready(stop):
            return
        self._closing = False
        ack_task = asyncio.create_task(
            supervise(f"bus-ack-{self.group}", self._ack_loop, stop, until_return=True), name=f"bus-ack-{self.group}"
        )
        claim_task = asyncio.create_task(
            supervise(f"bus-claim-{self.group}", lambda: self._claim_loop(stop), stop), name=f"bus-claim-{self.group}"
        )
        # renewal goes on while in-flight handlers finish after ``stop``: it is cancelled once they are done
        renew_task = asyncio.create_task(
            supervise(f"bus-renew-{self.group}", self._renew_loop, asyncio.Event()), name=f"bus-renew-{self.group}"
        )
        log.info("consumer started", extra={"group": self.group, "consumer": self.name, "streams": self._streams})
        try:
            await supervise(f"bus-read-{self.group}", lambda: self._read_loop(stop), stop)
        finally:
            claim_task.cancel()
            if self._tasks:
                _, pending = await asyncio.wait(set(self._tasks), timeout=self.options.handler_timeout + 2.0)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=2.0)
            renew_task.cancel()
            self._closing = True
            self._ack_signal.set()
            try:
                await asyncio.wait_for(ack_task, timeout=10.0)
            except (TimeoutError, RedisError):  # pragma: no cover - the ack loop logs and retries its own errors
                log.warning("could not flush acknowledgements at shutdown", extra={"group": self.group})
            await asyncio.gather(claim_task, renew_task, return_exceptions=True)
            log.info("consumer stopped", extra={"group": self.group, "consumer": self.name})

    async def _ensure_groups(self) -> None:
        """Create the group (and consumer) on every stream read. A key that is not a stream (``WRONGTYPE``:
        written by someone else) is logged at ERROR and left out until the process restarts, so it cannot
        stop the reading of the other streams (one ``XREADGROUP`` covers them all)."""
        for stream in list(self._streams):
            try:
                created = await ensure_group(self.redis, stream, self.group, self.options.start_id)
            except ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                log.error(
                    "key is not a stream; not reading it until restarted",
                    extra={"group": self.group, "stream": stream},
                )
                self._streams.remove(stream)
                continue
            if created:
                log.info("created consumer group", extra={"stream": stream, "group": self.group})
            # listed at once (XREADGROUP alone registers a consumer only when it gets an entry)
            await self.redis.xgroup_createconsumer(stream, self.group, self.name)

    async def _recreate_groups(self) -> bool:
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
                await self._sleep(min(5.0, 0.1 * 2**failures), stop)
        return False

    async def _sleep(self, delay: float, stop: asyncio.Event) -> bool:
        """Sleep up to ``delay`` seconds; True when ``stop`` was set."""
        if stop.is_set():
            return True
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            return False
        return True

    async def _read_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        streams: dict[Any, Any] = dict.fromkeys(self._streams, ">")
        # read again once a quarter of the slots are free: reading whenever one slot frees would degrade
        # into one-entry reads under load
        low_water = max(1, self.concurrency // 4)
        while not stop.is_set():
            free = self.concurrency - len(self._tasks)
            if free < low_water:
                self._slot.clear()
                waiter = asyncio.ensure_future(stop.wait())
                slot = asyncio.ensure_future(self._slot.wait())
                await asyncio.wait({waiter, slot}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                slot.cancel()
                continue
            if not streams:  # every key was something else than a stream: nothing to read
                await self._sleep(1.0, stop)
                continue
            try:
                batch = await read_group(self.redis, self.group, self.name, streams, free, self.options.block_ms)
                failures = 0
            except RedisError as exc:
                if (is_nogroup(exc) or "WRONGTYPE" in str(exc)) and await self._recreate_groups():
                    streams = dict.fromkeys(self._streams, ">")
                    continue
                failures += 1
                log.warning(
                    "stream read failed; retrying",
                    extra={"group": self.group, "error": str(exc), "failures": failures},
                )
                await self._sleep(min(5.0, 0.05 * 2**failures), stop)
                continue
            if batch:
                await self._dispatch(batch, {})

    async def _dispatch(self, batch: Sequence[Entry], deliveries: dict[str, int]) -> None:
        """Start the handling of entries just read (``deliveries``: counts of reclaimed entries by id)."""
        ready: list[tuple[_Held, Handler, bool]] = []
        for stream, entry_id, fields, problem in batch:
            held = _Held(stream, entry_id, fields, deliveries.get(entry_id, 1))
            if not fields:  # deleted or trimmed while pending
                self._ack(held)
                continue
            try:
                if problem is not None:
                    raise MalformedEntry(DeadReason.MALFORMED, problem)
                check_envelope(fields)
            except MalformedEntry as exc:
                self._spawn(held, self._dead_letter(held, exc.reason, str(exc)))
                continue
            broken = self._contract(stream, fields)
            if broken is not None:
                if broken[0] is DeadReason.UNKNOWN_TYPE and not self.options.dead_letter_unknown:
                    self._ack(held)
                else:
                    self._spawn(held, self._dead_letter(held, *broken))
                continue
            resolved = self._resolve(fields[F_TYPE])
            if resolved is None:
                self._ack(held)  # a type this group does not handle
                continue
            ready.append((held, *resolved))
        if self.idem is not None and ready:
            try:
                claims = await self.idem.claim_many([h.fields[F_ID] for h, _, _ in ready if h.fields])
            except RedisError:
                claims = []  # each task claims on its own
            for (held, _, _), claim in zip(ready, claims, strict=False):
                held.claim = claim
        for held, handler, typed in ready:
            self._spawn(held, self._process(held, handler, typed))

    def _spawn(self, held: _Held, work: Awaitable[None]) -> None:
        key = (held.stream, held.entry_id)
        self._held[key] = held.fields.get(F_ID) if held.fields else None
        task = asyncio.ensure_future(work)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._held.pop(key, None)
            self._slot.set()
            if not t.cancelled() and t.exception() is not None:
                log.error("event task failed", extra={"group": self.group, "error": repr(t.exception())})

        task.add_done_callback(done)

    async def _finish_broken(self, held: _Held, exc: BaseException) -> None:
        """Last resort for a fault of the bus itself while handling an entry: dead-letter it (reason
        ``handler_failed``, with the error) rather than leave it pending for ever."""
        log.error(
            "event processing failed unexpectedly; dead-lettering the entry",
            exc_info=exc,
            extra={"group": self.group, "stream": held.stream, "entry": held.entry_id},
        )
        try:
            await self._dead_letter(held, DeadReason.HANDLER_FAILED, f"bus error: {type(exc).__name__}: {exc}")
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

    async def _process(self, held: _Held, handler: Handler, typed: bool) -> None:
        try:
            await self._process_entry(held, handler, typed)
        except RedisError as exc:
            log.warning(
                "lost contact with Redis while handling; the entry stays pending",
                extra={"group": self.group, "entry": held.entry_id, "error": str(exc)},
            )
        except Exception as exc:
            await self._finish_broken(held, exc)

    async def _process_entry(self, held: _Held, handler: Handler, typed: bool) -> None:
        assert held.fields is not None
        event_id = held.fields[F_ID]
        try:
            event = decode(
                held.fields,
                stream=held.stream,
                entry_id=held.entry_id,
                deliveries=held.deliveries,
                typed=typed,
                checked=True,
            )
        except MalformedEntry as exc:
            if held.claim is Claim.NEW and self.idem is not None:
                await self.idem.release(event_id)
            await self._dead_letter(held, exc.reason, str(exc))
            return
        while True:
            if self.idem is not None:
                claim = held.claim or await self.idem.claim(event_id)
                held.claim = None
                if claim is Claim.DONE:
                    self.metrics.duplicates.labels(held.stream, self.group).inc()
                    self._ack(held)
                    return
                if claim is Claim.BUSY:  # another copy of this event is being handled right now
                    if await self._sleep(0.05 + random.random() * 0.05, self._stop):
                        return
                    continue
            failure = await self._handle(handler, event)
            if failure is None:
                self._ack(held, event_id)
                return
            reason, error = failure
            self.metrics.failed.labels(held.stream, self.group, type_label(event.type)).inc()
            if self.idem is not None:
                await self.idem.release(event_id)
            if held.deliveries >= self.options.max_deliveries or reason is DeadReason.REJECTED:
                await self._dead_letter(held, reason, error)
                return
            self.metrics.retried.labels(held.stream, self.group, type_label(event.type)).inc()
            if await self._sleep(self._backoff(held.deliveries), self._stop):
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

    async def _owns(self, stream: str, entry_id: str) -> bool:
        """True when the entry is still pending and delivered to this consumer."""
        return bool(await pending_range(self.redis, stream, self.group, entry_id, entry_id, 1, consumer=self.name))

    def _backoff(self, deliveries: int) -> float:
        """Seconds before retry ``deliveries + 1``: exponential with full jitter, capped at ``backoff_max``
        (not by ``claim_idle``: the waiting entry is renewed like one in flight)."""
        ceiling = min(self.options.backoff_max, self.options.backoff_base * 2 ** (deliveries - 1))
        return float(ceiling / 2 + random.random() * ceiling / 2)

    async def _handle(self, handler: Handler, event: Event) -> tuple[DeadReason, str] | None:
        consumed, duration = self._label(event.stream, event.type)
        started = time.perf_counter()
        failure: tuple[DeadReason, str] | None = None
        if self.tracer is None or not exports_spans(self.bus.rt.tracing.provider):
            # no span would be exported: run in the producer's trace context without recording a span
            parent = extract(event.traceparent, event.tracestate) if self.tracer is not None else None
            token = otel_context.attach(parent) if parent is not None else None
            try:
                async with asyncio.timeout(self.options.handler_timeout):
                    await handler(event)
            except TimeoutError:
                failure = (DeadReason.TIMEOUT, f"handler timed out after {self.options.handler_timeout}s")
            except PermanentError as exc:
                failure = (DeadReason.REJECTED, f"{type(exc).__name__}: {exc}")
            except BaseException as exc:
                failure = _handler_failure(exc)
            finally:
                if token is not None:
                    otel_context.detach(token)
        else:
            parent = extract(event.traceparent, event.tracestate)
            with self.tracer.start_as_current_span(
                f"process {event.stream}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes(event.stream, "process", event.id, self.group),
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                if event.deliveries > 1:
                    span.set_attribute("messaging.message.delivery_count", event.deliveries)
                try:
                    async with asyncio.timeout(self.options.handler_timeout):
                        await handler(event)
                except TimeoutError:
                    failure = (DeadReason.TIMEOUT, f"handler timed out after {self.options.handler_timeout}s")
                    span.set_status(Status(StatusCode.ERROR, failure[1]))
                except PermanentError as exc:
                    failure = (DeadReason.REJECTED, f"{type(exc).__name__}: {exc}")
                    span.set_status(Status(StatusCode.ERROR, failure[1]))
                except BaseException as exc:
                    failure = _handler_failure(exc)
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, failure[1]))
        duration.observe(time.perf_counter() - started)
        if failure is None:
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

    # acknowledgements and dead letters ---------------------------------------------------------------------

    def _ack(self, held: _Held, event_id: str | None = None) -> None:
        """Queue the acknowledgement (and, with ``event_id``, the idempotency marker) for the ack loop."""
        self._acks.setdefault(held.stream, []).append(held.entry_id)
        if event_id is not None and self.idem is not None:
            self._done.append(event_id)
        self._ack_signal.set()

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_signal.wait()
            self._ack_signal.clear()
            try:
                await self._flush_acks()
            except RedisError as exc:
                log.warning("acknowledgement failed; entries will be redelivered", extra={"error": str(exc)})
            if self._closing and not self._acks and not self._done:
                return

    async def _flush_acks(self) -> None:
        acks, done = self._acks, self._done
        if not acks and not done:
            return
        self._acks, self._done = {}, []
        async with self.redis.pipeline(transaction=False) as pipe:
            if self.idem is not None:
                await self.idem.mark_done(pipe, done)
            for stream, ids in acks.items():
                pipe.xack(stream, self.group, *ids)
            await pipe.execute()

    async def _dead_letter(self, held: _Held, reason: DeadReason, error: str) -> None:
        fields, truncated = _dead_fields(held.fields)
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
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self.dead_stream, fields, maxlen=self.bus.dead_maxlen, approximate=True)  # type: ignore[arg-type]
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

    # renewal -----------------------------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        interval = self.options.claim_idle / RENEW_FRACTION
        while True:
            await asyncio.sleep(interval)
            try:
                await self._renew()
            except RedisError as exc:
                log.warning(
                    "lease renewal failed; entries not renewed within claim_idle go to other consumers",
                    extra={"group": self.group, "consumer": self.name, "error": str(exc)},
                )
            self.renewal_passes += 1

    async def _renew(self) -> None:
        """Renew every entry this consumer holds, in two round trips whatever their number: one script per
        stream (pipelined, :data:`_RENEW`) that renews the entries still delivered to this consumer and not yet
        reclaimable (idle below ``claim_idle``) — checked and claimed atomically, so an entry another consumer
        took over is never taken back — then one compare-and-extend of the idempotency leases of the renewed
        entries. Entries settled meanwhile are left out."""
        held = list(self._held)
        if not held:
            return
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in held:
            by_stream.setdefault(stream, []).append(entry_id)
        idle_ms = int(self.options.claim_idle * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                await self._renew_script(keys=[stream], args=[self.group, self.name, idle_ms, *ids], client=pipe)
            replies = await pipe.execute(raise_on_error=False)
        event_ids: list[str] = []
        lost = 0
        for (stream, ids), reply in zip(by_stream.items(), replies, strict=True):
            if isinstance(reply, Exception):
                if is_nogroup(reply):
                    await self._recreate_groups()
                raise reply
            renewed = {r.decode() if isinstance(r, bytes) else str(r) for r in reply or []}
            lost += sum(1 for i in ids if i not in renewed and (stream, i) in self._held)  # not settled since
            for entry_id in renewed:
                event_id = self._held.get((stream, entry_id))
                if event_id is not None:
                    event_ids.append(event_id)
            self.metrics.renewed.labels(stream, self.group).inc(len(renewed))
        if lost:
            log.warning(
                "held entries no longer renewable (settled, reclaimable or taken over by another consumer)",
                extra={"group": self.group, "consumer": self.name, "count": lost},
            )
        if event_ids and self.idem is not None:
            async with self.redis.pipeline(transaction=False) as pipe:
                await self.idem.extend(pipe, event_ids)
                await pipe.execute()

    # reclaiming and gauges ---------------------------------------------------------------------------------

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        interval = self.options.claim_interval or max(0.05, min(1.0, self.options.claim_idle / 10))
        next_stats = 0.0
        while not await self._sleep(interval, stop):
            try:
                await self._reclaim()
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + self.options.stats_interval
                    await self._update_gauges()
            except RedisError as exc:
                if is_nogroup(exc):
                    await self._recreate_groups()
                log.debug("reclaim pass failed", extra={"group": self.group, "error": str(exc)})

    async def _reclaim(self) -> None:
        idle_ms = int(self.options.claim_idle * 1000)
        for stream in self._streams:
            free = self.concurrency - len(self._tasks)
            if free <= 0:
                return
            claimed = await autoclaim(self.redis, stream, self.group, self.name, idle_ms, free)
            entries = [e for e in claimed if (stream, e[1]) not in self._held]
            if not entries:
                continue
            ids = [e[1] for e in entries]
            pending = await pending_range(
                self.redis, stream, self.group, ids[0], ids[-1], len(ids) + 100, consumer=self.name
            )
            counts = {str(p["message_id"]): int(p["times_delivered"]) for p in pending}
            self.metrics.reclaimed.labels(stream, self.group).inc(len(entries))
            log.info(
                "reclaimed pending entries of an idle consumer",
                extra={"group": self.group, "stream": stream, "count": len(entries)},
            )
            batch: list[Entry] = []
            for entry in entries:
                _, eid, fields, _problem = entry
                deliveries = counts.get(eid, 1)
                if fields and deliveries > self.options.max_deliveries:
                    held = _Held(stream, eid, fields, deliveries - 1)
                    error = f"delivery cap {self.options.max_deliveries} reached (consumers died while handling)"
                    self._spawn(held, self._dead_letter(held, DeadReason.HANDLER_FAILED, error))
                else:
                    batch.append(entry)
            await self._dispatch(batch, counts)

    async def _update_gauges(self) -> None:
        for stream in self._streams:
            for g in await groups_info(self.redis, stream):
                if g.get("name") != self.group:
                    continue
                self.metrics.pending.labels(stream, self.group).set(int(g.get("pending") or 0))
                lag = await lag_of(self.redis, stream, g)
                if lag is not None:
                    self.metrics.lag.labels(stream, self.group).set(lag)
            await self._forget_dead_consumers(stream)

    async def _forget_dead_consumers(self, stream: str) -> None:
        """Remove consumers idle for over ``FORGET_CONSUMER_AFTER`` with nothing pending (killed processes)."""
        for c in await consumers_info(self.redis, stream, self.group):
            if c["name"] != self.name and int(c["pending"]) == 0 and int(c["idle"]) > FORGET_CONSUMER_AFTER * 1000:
                await self.redis.xgroup_delconsumer(stream, self.group, wire(c["name"]))
