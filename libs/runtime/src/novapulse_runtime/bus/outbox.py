"""Transactional outbox: events written in the service's own database with its state change, then relayed to
the service's stream in order, at least once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from .. import documents
from ..process import retry_pause, supervise
from ..redisconn import open_pubsub
from .constants import (
    F_SOURCE,
    F_TYPE,
    MAX_ENTRY_BYTES,
    OUTBOX_COLLECTION,
    OUTBOX_DEAD_COLLECTION,
    RELAY_BATCH,
    RELAY_LOCK_TTL,
    RELAY_RETRY_MAX,
    RELAY_SWEEP_INTERVAL,
)
from .envelope import Event, MalformedEntry, build, check_envelope, entry_size, with_trace
from .publisher import NotReplicated

if TYPE_CHECKING:
    from . import EventBus

log = logging.getLogger("novapulse.bus")

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class Outbox:
    """Outbox records in the ``outbox`` collection of the service's database.

    A record is ``{_id: event id (UUIDv7, time-ordered), key: aggregate key, stream, fields: {envelope},
    created_at}``; the relay publishes records in ``_id`` order and deletes them once Redis has them — with
    ``OUTBOX_REPLICA_ACKS`` > 0, once ``WAIT`` says that many replicas have them too (else they stay and are
    published again: consumers dedupe the copies by event id).
    """

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.rt = bus.rt
        self.collection = self.rt.db[OUTBOX_COLLECTION]
        self.quarantine = self.rt.db[OUTBOX_DEAD_COLLECTION]
        self.stream = bus.keys.stream(self.rt.service)
        self.lock_key = bus.keys.outbox_lock(self.rt.service, self.rt.db.name)
        self.wake_channel = bus.keys.outbox_wake(self.rt.service, self.rt.db.name)
        self.batch = RELAY_BATCH
        self.sweep_interval = RELAY_SWEEP_INTERVAL
        self.lock_ttl = RELAY_LOCK_TTL
        self.replica_acks = self.rt.settings.outbox_replica_acks
        self.replica_timeout_ms = self.rt.settings.outbox_replica_timeout_ms
        self._wake = asyncio.Event()
        self._transactions: bool | None = None
        self._token = f"{os.getpid()}:{os.urandom(6).hex()}"

    # writing -----------------------------------------------------------------------------------------------

    async def supports_transactions(self) -> bool:
        """True on a replica set or sharded cluster (multi-document transactions are real there)."""
        if self._transactions is None:
            hello = await self.rt.mongo.admin.command("hello")
            self._transactions = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
        return self._transactions

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncClientSession | None]:
        """A session inside a transaction when the deployment supports it (else ``None``): pass it to your
        writes and to :meth:`add`; it commits when the block ends without an error. The relay is woken
        after the commit."""
        if await self.supports_transactions():
            async with self.rt.mongo.start_session() as session, await session.start_transaction():
                yield session
        else:
            yield None
        await self.notify()

    async def add(
        self,
        type_: str,
        data: BaseModel | dict[str, Any],
        *,
        org_id: str | None = None,
        subject: str | None = None,
        key: str | None = None,
        session: AsyncClientSession | None = None,
        event_id: str | None = None,
    ) -> Event:
        """Write one event to the outbox (inside ``session``'s transaction when given) and return it.

        ``event_id`` (default: a fresh UUIDv7) is the envelope id; a producer that may redo an effect after a
        crash derives it from what it redoes, so consumers dedupe the copy. The record's ``_id`` is the event
        id: adding the same id while the first record still waits raises pymongo's ``DuplicateKeyError``
        (the event is already on its way). Records are relayed in ``_id`` order, so a derived id should
        start with a time-ordered prefix (a UUIDv7 shape) to keep its place.

        ``key`` is the aggregate key (default ``subject``, else ``org_id``): records of one key are published
        in the order they were added. Raises ``ValueError``/``TypeError``/``ValidationError`` for data that
        does not fit the catalogue.
        """
        event = build(type_, data, source=self.rt.service, org_id=org_id, subject=subject, event_id=event_id)
        fields = self._fields(event)
        await self.collection.insert_one(self._record(event, fields, key), session=session)
        if session is None or not session.in_transaction:
            await self.notify()
        return with_trace(event, fields)

    async def add_many(
        self, events: list[Event], *, key: str | None = None, session: AsyncClientSession | None = None
    ) -> list[Event]:
        """Write several events built with :meth:`EventBus.event` in one insert (kept in list order)."""
        if not events:
            return []
        encoded = self.bus.publisher.fields_for_many(events, self.stream, "create")
        docs = [self._record(e, f, key) for e, f in zip(events, encoded, strict=True)]
        await self.collection.insert_many(docs, ordered=True, session=session)
        if session is None or not session.in_transaction:
            await self.notify()
        return events

    def _fields(self, event: Event) -> dict[str, str]:
        return self.bus.publisher.fields_for(event, self.stream, "create")

    def _record(self, event: Event, fields: dict[str, str], key: str | None) -> dict[str, Any]:
        # ``stream`` is informational: the relay publishes to this service's own stream only
        return {
            "_id": event.id,
            "key": key or event.subject or event.org_id or event.id,
            "type": event.type,
            "stream": self.stream,
            "fields": fields,
            "created_at": event.time,
        }

    async def notify(self) -> None:
        """Wake the relay now: this process's directly, other processes' through Redis pub/sub."""
        self._wake.set()
        with contextlib.suppress(RedisError):  # else the relay's timer sweep picks the records up
            await self.rt.redis.publish(self.wake_channel, "1")

    # relaying ----------------------------------------------------------------------------------------------

    async def backlog(self) -> tuple[int, float]:
        """(records waiting, age in seconds of the oldest)."""
        oldest = await self.collection.find_one({}, sort=[("_id", 1)])
        # every record from the oldest on: served by the _id index (a count of {} reads the whole outbox)
        count = 0 if oldest is None else await documents.count(self.collection, {"_id": {"$gte": oldest["_id"]}})
        age = 0.0
        if oldest is not None and isinstance(oldest.get("created_at"), datetime):
            age = max(0.0, (datetime.now(UTC) - oldest["created_at"]).total_seconds())
        return count, age

    async def relay_once(self) -> int:
        """Publish up to one batch of records in order; returns how many were published (deleted from the
        outbox). :raises NotReplicated: fewer replicas than ``OUTBOX_REPLICA_ACKS`` confirmed the batch within
        ``OUTBOX_REPLICA_TIMEOUT_MS`` (the records stay; a warning is logged and
        ``novapulse_outbox_unreplicated_total`` counts it). Redis and MongoDB errors propagate."""
        docs = await self.collection.find({}, sort=[("_id", 1)], limit=self.batch).to_list()
        if not docs:
            self.bus.metrics.outbox_backlog.set(0)
            self.bus.metrics.outbox_age.set(0)
            return 0
        self.bus.metrics.outbox_backlog.set(  # a full batch: count every record from the oldest on (the _id index)
            len(docs)
            if len(docs) < self.batch
            else await documents.count(self.collection, {"_id": {"$gte": docs[0]["_id"]}})
        )
        created = docs[0].get("created_at")
        if isinstance(created, datetime):
            self.bus.metrics.outbox_age.set(max(0.0, (datetime.now(UTC) - created).total_seconds()))
        entries: list[tuple[str, dict[str, str]]] = []
        for doc in docs:
            problem = self.check_record(doc)
            if problem is None:
                entries.append((doc["fields"][F_TYPE], doc["fields"]))
            else:
                await self._quarantine(doc, problem)
        try:
            await self.bus.publisher.add_entries(
                self.stream, entries, replicas=self.replica_acks, replica_timeout_ms=self.replica_timeout_ms
            )
        except NotReplicated as exc:
            self.bus.metrics.outbox_unreplicated.inc()
            log.warning(
                "outbox batch not confirmed by enough replicas; kept unpublished, retrying",
                extra={"replicas": exc.acked, "wanted": exc.wanted, "records": len(entries)},
            )
            raise
        await self.collection.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
        return len(docs)

    def check_record(self, doc: dict[str, Any]) -> str | None:
        """Why a record cannot be published (``None`` when it can): ``fields`` must be a flat map of strings
        that are valid Unicode, form a complete envelope from this service (``source``) within
        ``MAX_ENTRY_BYTES``, for this service's stream. Records come from our own writes; one that does not
        fit (a hand edit, an older version) must not stop the relay for every record behind it."""
        fields = doc.get("fields")
        if not isinstance(fields, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in fields.items()
        ):
            return "fields is not a map of strings"
        stream = doc.get("stream")
        if stream is not None and stream != self.stream:
            return f"record is for stream {str(stream)[:200]!r}; this relay publishes only to {self.stream}"
        try:
            check_envelope(fields)
            size = entry_size(fields)  # raises UnicodeEncodeError on a lone surrogate
        except MalformedEntry as exc:
            return f"{exc.reason}: {exc}"
        except UnicodeEncodeError:
            return "a field is not valid Unicode (lone surrogate)"
        if size > MAX_ENTRY_BYTES:
            return f"entry is {size} bytes; the limit is {MAX_ENTRY_BYTES}"
        if fields[F_SOURCE] != self.rt.service:
            return f"source is {fields[F_SOURCE][:100]!r}, not {self.rt.service}"
        return None

    async def _quarantine(self, doc: dict[str, Any], problem: str) -> None:
        """Move a record that cannot be published to ``outbox_dead`` with the reason (and log it)."""
        log.error(
            "outbox record cannot be published; moved to outbox_dead",
            extra={"record": str(doc.get("_id"))[:200], "error": problem},
        )
        await self.quarantine.replace_one(
            {"_id": doc["_id"]},
            {"_id": doc["_id"], "record": doc, "error": problem, "dead_at": datetime.now(UTC)},
            upsert=True,
        )

    async def relay(self, stop: asyncio.Event) -> None:
        """Worker: publish outbox records until ``stop`` is set. One relay per service database is active at
        a time (a Redis lease); the others stand by. Wakes at once after a write, sweeps every second."""
        listener = asyncio.create_task(supervise("outbox-wake", lambda: self._listen(stop), stop), name="outbox-wake")
        holding = False
        failures = 0
        try:
            while not stop.is_set():
                try:
                    holding = await self._hold_lease(holding)
                    if not holding:
                        # A stand-by cannot publish: a wake only makes it try the lease once more. Cleared
                        # here, else one wake left set would turn this wait into a busy loop of SET NX.
                        self._wake.clear()
                        await self._wait(stop, self.lock_ttl / 2)
                        continue
                    self._wake.clear()
                    published = await self.relay_once()
                    failures = 0
                    if published >= self.batch:
                        continue
                    if published == 0:
                        await self._wait(stop, self.sweep_interval)
                except NotReplicated:  # logged and counted by relay_once
                    failures += 1
                    await self._back_off(stop, failures)
                except (RedisError, PyMongoError, OSError) as exc:
                    failures += 1
                    log.warning("outbox relay failed; retrying", extra={"error": str(exc), "failures": failures})
                    await self._back_off(stop, failures)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            if holding:
                with contextlib.suppress(RedisError):
                    await self.rt.redis.eval(_RELEASE, 1, self.lock_key, self._token)

    async def _hold_lease(self, holding: bool) -> bool:
        ttl_ms = int(self.lock_ttl * 1000)
        if holding:
            renewed = await self.rt.redis.eval(_RENEW, 1, self.lock_key, self._token, ttl_ms)
            if renewed:
                return True
        return bool(await self.rt.redis.set(self.lock_key, self._token, nx=True, px=ttl_ms))

    async def _back_off(self, stop: asyncio.Event, failures: int) -> None:
        """Pause after the ``failures``-th failed pass in a row: 0.2 s doubling up to ``RELAY_RETRY_MAX``, cut
        short only by ``stop``. Wake-ups do not cut it: writes during an outage would otherwise turn the
        retries into a busy loop (seen in a Sentinel fail-over: a thousand failed passes in two seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), retry_pause(failures, 0.1, RELAY_RETRY_MAX))

    async def _wait(self, stop: asyncio.Event, timeout: float) -> None:
        stopper = asyncio.ensure_future(stop.wait())
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({stopper, waker}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            waker.cancel()

    async def _listen(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            pubsub: Any = None
            try:
                pubsub = await open_pubsub(self.rt.redis, ignore_subscribe_messages=True)
                await pubsub.subscribe(self.wake_channel)
                failures = 0
                while not stop.is_set():
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._wake.set()
            except (RedisError, OSError):
                failures += 1
                await asyncio.sleep(retry_pause(failures, 0.1, 5.0))
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
