"""The delivery worker: fans events out to endpoints, claims due messages, attempts them lane by lane, and
records every attempt.

Durability: a message is in MongoDB before it is attempted; a claim is a lease (``next_attempt_at`` in the
future, guarded by a claim token); the attempt number and start are written (``inflight``) before the
request goes out. A worker killed mid-attempt leaves a lease that runs out: the next claimer logs the lost
attempt (outcome ``lost``) and sends again with the same ``webhook-id``. Delayed retries are just messages
whose ``next_attempt_at`` lies ahead, so they survive restarts of every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
import uuid
from collections.abc import Coroutine, Mapping
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import propagate, trace
from pymongo import InsertOne, UpdateOne
from pymongo.errors import PyMongoError

from novapulse_runtime import jsonstrict
from novapulse_runtime.bus import PermanentError
from novapulse_runtime.catalog import CATALOG
from novapulse_runtime.catalog.webhook import EndpointDisabled, MessageFailed
from novapulse_runtime.metrics import Metrics
from novapulse_runtime.ratelimit import RateLimit, RateLimiter

from .clock import as_datetime, to_ms, utcnow
from .constants import (
    ATTEMPTS,
    ENDPOINT_CACHE_TTL,
    ENDPOINT_RATE_LIMIT,
    EVENT_ENDPOINT_DISABLED,
    EVENT_MESSAGE_FAILED,
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    MESSAGES,
    SELF_EVENTS,
    USER_AGENT,
    MessageStatus,
    Outcome,
)
from .dispatcher import Dispatcher, Job
from .domain import RetryPolicy, classify, decide, read_retry_after, redact
from .fanout import new_message, payload_body, subscribed
from .ports import EventPublisher
from .repository import Doc, Repository
from .secretbox import SecretBox, SecretError, secret_key
from .sender import MAX_ERROR_CHARS, AttemptResult, Sender, clean_text
from .settings import WebhookSettings
from .signing import signature_header
from .slots import EndpointSlots
from .versions import EndpointVersions
from .writer import BatchWriter

log = logging.getLogger("novapulse.webhook.worker")
tracer = trace.get_tracer("novapulse.webhook")

CLAIM_BATCH = 100
_NON_FINITE = re.compile(r"NaN|Infinity")  # cheap pre-check before a strict parse of a stored body
CACHE_MAX_ENTRIES = 10_000


def _make_room(cache: dict[str, Any]) -> None:
    """Bound a TTL cache: drop expired entries once it is full, and everything if that is not enough."""
    if len(cache) < CACHE_MAX_ENTRIES:
        return
    now = time.monotonic()
    for key in [k for k, entry in cache.items() if entry[0] <= now]:
        del cache[key]
    if len(cache) >= CACHE_MAX_ENTRIES:
        cache.clear()


def active_secrets(endpoint: Doc, now: datetime) -> list[str]:
    """Encrypted secrets that sign now: the current one, plus rotated ones still in their grace period."""
    found = []
    for s in endpoint.get("secrets") or []:
        expires = as_datetime(s.get("expires_at"))
        if expires is None or expires > now:
            found.append(s["value"])
    return found


class Delivery:
    """Owns the lanes, the batch writer and the caches; ``run`` is the worker's main loop."""

    def __init__(
        self,
        repo: Repository,
        settings: WebhookSettings,
        box: SecretBox,
        sender: Sender,
        publisher: EventPublisher,
        metrics: Metrics | None = None,
        versions: EndpointVersions | None = None,
        limiter: RateLimiter | None = None,
        slots: EndpointSlots | None = None,
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.box = box
        self.sender = sender
        self.publisher = publisher
        self.writer = BatchWriter(repo)
        self.dispatcher = Dispatcher(self.process)
        self.policy = RetryPolicy(
            settings.webhook_retry_schedule, settings.webhook_retry_jitter, settings.webhook_retry_after_max
        )
        self.timeout = settings.webhook_timeout
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.worker_id = uuid.uuid4().hex[:12]
        self.versions = versions
        self.limiter = limiter
        self.slots = slots
        self._slot_holders: dict[str, tuple[str, str]] = {}  # message id -> (endpoint id, claim) holding a slot
        self._held: dict[str, Job] = {}  # claimed by this worker and not finished: their leases are renewed
        self._endpoints: dict[str, tuple[float, str | None, Doc | None]] = {}  # (expires, version, doc)
        self._orgs: dict[str, tuple[float, str | None, list[Doc]]] = {}
        self._keys: dict[str, bytes] = {}
        self._loading: dict[tuple[str, ...], asyncio.Future[Any]] = {}
        self._closing = False
        self._wake = asyncio.Event()
        self._attempts = (
            metrics.counter("novapulse_webhook_attempts_total", "Webhook delivery attempts", ("outcome",))
            if metrics
            else None
        )
        self._latency = (
            metrics.histogram("novapulse_webhook_attempt_duration_seconds", "Webhook attempt duration")
            if metrics
            else None
        )

    # --- caches ----------------------------------------------------------------------------------------
    # Read-your-writes: a cached entry carries the organisation's endpoint version (see versions.py) and is
    # used only while that version is still current, so an event that happens after an API write answered
    # sees the write (new endpoint, new filter, rotated secret, disabled, headers, rate limit). Without Redis
    # the version is unknown and entries live ENDPOINT_CACHE_TTL seconds, as before.

    async def _version(self, org_id: str) -> str | None:
        return await self.versions.current(org_id) if self.versions is not None else None

    def _fresh(self, hit: tuple[float, str | None, Any] | None, version: str | None) -> bool:
        if hit is None or hit[0] <= time.monotonic():
            return False
        return version is None or hit[1] == version

    async def endpoint(self, endpoint_id: str, org_id: str | None = None) -> Doc | None:
        """An endpoint, as current as the organisation's endpoint version (one database read however many
        ask at once); ``org_id`` is the organisation the caller expects it in (None: no version check)."""
        version = await self._version(org_id) if org_id else None
        hit = self._endpoints.get(endpoint_id)
        if self._fresh(hit, version) and hit is not None:
            doc: Doc | None = hit[2]
            return doc
        doc = await self._single_flight(("ep", endpoint_id, version or ""), self._load_endpoint(endpoint_id, version))
        return doc

    async def _load_endpoint(self, endpoint_id: str, version: str | None) -> Doc | None:
        doc = await self.repo.endpoint(endpoint_id)
        _make_room(self._endpoints)
        self._endpoints[endpoint_id] = (time.monotonic() + ENDPOINT_CACHE_TTL, version, doc)
        return doc

    async def org_endpoints(self, org_id: str) -> list[Doc]:
        """An organisation's enabled endpoints, cached like :meth:`endpoint`."""
        version = await self._version(org_id)
        hit = self._orgs.get(org_id)
        if self._fresh(hit, version) and hit is not None:
            cached: list[Doc] = hit[2]
            return cached
        docs: list[Doc] = await self._single_flight(("org", org_id, version or ""), self._load_org(org_id, version))
        return docs

    async def _load_org(self, org_id: str, version: str | None) -> list[Doc]:
        docs = await self.repo.org_endpoints(org_id)
        expires = time.monotonic() + ENDPOINT_CACHE_TTL
        _make_room(self._orgs)
        _make_room(self._endpoints)
        self._orgs[org_id] = (expires, version, docs)
        for d in docs:
            self._endpoints[d["_id"]] = (expires, version, d)
        return docs

    async def _single_flight(self, key: tuple[str, ...], load: Coroutine[Any, Any, Any]) -> Any:
        running = self._loading.get(key)
        if running is not None and not running.done():
            load.close()
            return await asyncio.shield(running)
        task = asyncio.ensure_future(load)
        self._loading[key] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._loading.pop(key, None)

    def forget(self, endpoint_id: str) -> None:
        self._endpoints.pop(endpoint_id, None)

    def signing_keys(self, endpoint: Doc, now: datetime) -> list[bytes]:
        keys = []
        for enc in active_secrets(endpoint, now):
            key = self._keys.get(enc)
            if key is None:
                if len(self._keys) >= CACHE_MAX_ENTRIES:  # rotated and deleted endpoints' keys do not pile up
                    self._keys.clear()
                key = self._keys[enc] = secret_key(self.box.decrypt_text(enc))
            keys.append(key)
        return keys

    # --- intake ----------------------------------------------------------------------------------------

    async def on_event(
        self, event_id: str, org_id: str, event_type: str, data: Mapping[str, Any], when: datetime
    ) -> int:
        """Fan a platform event out to the organisation's subscribed endpoints (public types only).
        Fresh messages are claimed by this worker at insert and go straight to their lanes."""
        et = CATALOG.lookup(event_type)
        if et is None or not et.public or not org_id:
            return 0
        endpoints = subscribed(await self.org_endpoints(org_id), event_type)
        if not endpoints:
            return 0
        now = utcnow()
        try:
            body = payload_body(event_type, data, when)
        except jsonstrict.InvalidJSON as exc:  # retrying cannot help: dead-letter it with the reason
            raise PermanentError(f"event data cannot be written as strict JSON: {exc}") from exc
        lease_until = now + self.lease
        docs, jobs = [], []
        for ep in endpoints:
            claim = None if self._closing or not self.dispatcher.has_room(ep["_id"]) else uuid.uuid4().hex
            doc = new_message(
                org_id=org_id,
                endpoint_id=ep["_id"],
                event_id=event_id,
                event_type=event_type,
                body=body,
                now=now,
                claim=claim,
                lease_until=lease_until,
            )
            docs.append(doc)
            if claim:
                jobs.append((doc, ep))
        if self.writer.closed:  # shutting down: plain inserts, nothing pre-claimed is left to run
            inserted = await self.repo.insert_messages(docs)
            jobs = []
        else:
            stored = await asyncio.gather(*(self.writer.put(MESSAGES, InsertOne(d)) for d in docs))
            inserted = {d["_id"] for d, ok in zip(docs, stored, strict=True) if ok}
        for doc, ep in jobs:
            if doc["_id"] in inserted and not self._submit(Job.from_doc(doc, doc["claim"], lease_until), ep):
                self._release(doc["_id"], doc["claim"])  # its lane filled up meanwhile: the poller takes it
        if len(inserted) < len(docs):
            log.info("duplicate event ignored", extra={"event_id": event_id, "skipped": len(docs) - len(inserted)})
        self._wake.set()
        return len(inserted)

    def _submit(self, job: Job, endpoint: Doc | None) -> bool:
        if endpoint is not None:
            job.concurrency = int(endpoint.get("concurrency") or self.settings.webhook_default_concurrency)
            # With Redis the endpoint's rate limit is enforced across every worker in process(); the lane's
            # own gate (per process) is only the fallback without a limiter.
            job.rate_limit = None if self.limiter is not None else endpoint.get("rate_limit")
        if not self.dispatcher.submit(job):
            return False
        self._held[job.id] = job
        return True

    # --- leases ----------------------------------------------------------------------------------------

    async def heartbeat(self, stop: asyncio.Event) -> None:
        """Renew the lease of every message this worker holds, every quarter of the lease, until ``stop``.

        A renewal is guarded by the claim token; a message whose claim is no longer ours (another worker took
        it after our lease ran out) is withdrawn at once, and a running attempt whose lease could not be
        renewed in time is cancelled before the lease ends, so no message is ever attempted by two workers at
        the same time (as long as this process's event loop is not stalled for longer than a lease)."""
        interval = self.lease.total_seconds() / 4
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()
            try:
                await self.renew_leases()
            except Exception:
                log.exception("renewing leases failed")
            self._withdraw_expiring()
            if self.slots is not None:
                await self.slots.renew(list(self._slot_holders.values()))

    async def renew_leases(self) -> int:
        """One renewal round; returns how many leases were renewed."""
        jobs = list(self._held.values())
        if not jobs:
            return 0
        now = utcnow()
        until = now + self.lease
        result = await self.repo.messages.bulk_write(
            [
                UpdateOne(
                    {"_id": j.id, "claim": j.claim, "status": MessageStatus.SENDING},
                    {"$set": {"next_attempt_at": to_ms(until)}},
                )
                for j in jobs
            ],
            ordered=False,
        )
        if result.matched_count == len(jobs):
            for j in jobs:
                j.lease_until = until
            return len(jobs)
        ours = {
            d["_id"]
            for d in await self.repo.messages.find(
                {"_id": {"$in": [j.id for j in jobs]}, "status": MessageStatus.SENDING}, {"claim": 1}
            ).to_list()
            if d.get("claim") in {j.claim for j in jobs if j.id == d["_id"]}
        }
        for j in jobs:
            if j.id in ours:
                j.lease_until = until
            elif self._held.get(j.id) is j:  # finished meanwhile (claim cleared) or taken over: not ours now
                self._held.pop(j.id, None)
                if self.dispatcher.cancel(j):
                    log.warning("claim lost; attempt withdrawn", extra={"message_id": j.id})
        return len(ours)

    def _withdraw_expiring(self) -> None:
        """Cancel what we hold whose lease ends within a quarter lease (renewals kept failing)."""
        limit = utcnow() + self.lease / 4
        for j in list(self._held.values()):
            if j.lease_until <= limit:
                self._held.pop(j.id, None)
                if self.dispatcher.cancel(j):
                    log.warning("lease could not be renewed; attempt withdrawn", extra={"message_id": j.id})

    def wake(self) -> None:
        """Ask the poller to look for due messages now."""
        self._wake.set()

    # --- the main loop ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim due messages until ``stop``; then finish running attempts and flush the logs."""
        writer_stop = asyncio.Event()
        writer = asyncio.create_task(self.writer.run(writer_stop), name="webhook-writer")
        beat_stop = asyncio.Event()
        beat = asyncio.create_task(self.heartbeat(beat_stop), name="webhook-leases")
        try:
            while not stop.is_set():
                if writer.done():  # the group-commit writer must never be gone silently: log and restart it
                    log.error(
                        "the batch writer stopped; restarting it",
                        extra={"error": repr(None if writer.cancelled() else writer.exception())},
                    )
                    writer = asyncio.create_task(self.writer.run(writer_stop), name="webhook-writer")
                if beat.done():  # so must the lease renewal
                    log.error(
                        "lease renewal stopped; restarting it",
                        extra={"error": repr(None if beat.cancelled() else beat.exception())},
                    )
                    beat = asyncio.create_task(self.heartbeat(beat_stop), name="webhook-leases")
                try:
                    await self.poll_once()
                except PyMongoError as exc:
                    log.warning("claiming due messages failed", extra={"error": repr(exc)})
                except Exception:
                    log.exception("polling for due messages failed")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.webhook_poll_interval):
                        waiter = asyncio.ensure_future(stop.wait())
                        waker = asyncio.ensure_future(self._wake.wait())
                        try:
                            await asyncio.wait({waiter, waker}, return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            waiter.cancel()
                            waker.cancel()
                self._wake.clear()
        finally:
            self._closing = True
            dropped = await self.dispatcher.drain(self.settings.shutdown_timeout)
            beat_stop.set()
            await beat
            now = utcnow()
            for job in dropped:  # queued but never started: give them back at once
                self._held.pop(job.id, None)
                self.writer.put(
                    MESSAGES,
                    UpdateOne(
                        {"_id": job.id, "claim": job.claim},
                        {
                            "$set": {"status": MessageStatus.PENDING, "next_attempt_at": to_ms(now)},
                            "$unset": {"claim": ""},
                        },
                    ),
                )
            writer_stop.set()
            await writer
            await self.sender.close()

    async def poll_once(self) -> int:
        """Claim due messages (retries, API-created messages, expired claims) into their lanes."""
        claimed = 0
        while claimed < CLAIM_BATCH and self.dispatcher.in_flight < self.settings.webhook_max_in_flight:
            now = utcnow()
            lease_until = now + self.lease
            token = uuid.uuid4().hex
            before = await self.repo.claim_due(now, lease_until, token, self.dispatcher.saturated())
            if before is None:
                break
            claimed += 1
            endpoint: Doc | None = None
            try:
                inflight = before.get("inflight")
                if inflight:
                    self._log_lost(before, inflight)
                endpoint = await self.endpoint(before["endpoint_id"], before["org_id"])
            except Exception:  # the message is held now: it still goes to its lane, process() finishes it
                log.exception("preparing a claimed message failed", extra={"message_id": before.get("_id")})
            if not self._submit(Job.from_doc(before, token, lease_until), endpoint):
                self._release(before["_id"], token)  # lane full: give it back now, not when the lease ends
                break
        return claimed

    def _release(self, message_id: str, claim: str) -> None:
        self.writer.put(
            MESSAGES,
            UpdateOne(
                {"_id": message_id, "claim": claim},
                {
                    "$set": {"status": MessageStatus.PENDING, "next_attempt_at": to_ms(utcnow())},
                    "$unset": {"claim": ""},
                },
            ),
        )

    def _log_lost(self, msg: Doc, inflight: Doc) -> None:
        n = int(inflight.get("attempt") or msg.get("attempts") or 0)
        self.writer.put(
            ATTEMPTS,
            InsertOne(
                {
                    "_id": f"{msg['_id']}.{n}",
                    "org_id": msg["org_id"],
                    "message_id": msg["_id"],
                    "endpoint_id": msg["endpoint_id"],
                    "attempt": n,
                    "started_at": as_datetime(inflight.get("started_at")) or utcnow(),
                    "url": inflight.get("url", ""),
                    "request_headers": {},
                    "status": None,
                    "response_body": None,
                    "duration_ms": None,
                    "error": "the worker stopped during this attempt; its outcome is unknown",
                    "outcome": Outcome.LOST,
                }
            ),
        )
        if self._attempts is not None:
            self._attempts.labels(Outcome.LOST).inc()

    # --- one attempt -----------------------------------------------------------------------------------

    async def process(self, job: Job) -> None:
        """Attempt one claimed message and record what happened. Never leaves a claimed message behind:
        whatever goes wrong in here (a database error, a bug, a value that does not encode), the attempt is
        logged as a ``failure`` with the reason and the message moves on its retry schedule."""
        try:
            await self._process(job)
        except Exception as exc:
            log.exception("delivery failed unexpectedly", extra={"message_id": job.id})
            self._fail_unexpectedly(job, exc)
        finally:
            if self._held.get(job.id) is job:
                del self._held[job.id]

    def _fail_unexpectedly(self, job: Job, exc: BaseException) -> None:
        """Finish ``job`` after an unexpected error: an attempt ``failure`` and the next scheduled try (the
        attempt id is the one :meth:`_process` would have used, so a log it already wrote is kept)."""
        now = utcnow()
        n = job.attempts + 1
        error = clean_text(f"internal error: {type(exc).__name__}: {exc}", MAX_ERROR_CHARS)
        self._log_unsent_failure(job, n, now, error)
        delay = self.policy.next_delay(n - job.round_start)
        self.writer.put(
            MESSAGES,
            UpdateOne(
                {"_id": job.id, "claim": job.claim},
                {
                    "$set": {
                        "status": MessageStatus.PENDING if delay is not None else MessageStatus.FAILED,
                        "attempts": n,
                        "next_attempt_at": to_ms(now + timedelta(seconds=delay)) if delay is not None else None,
                        "last_status": None,
                        "last_error": error,
                        "updated_at": now,
                    },
                    "$unset": {"inflight": "", "claim": ""},
                },
            ),
        )

    def _log_unsent_failure(self, job: Job, n: int, now: datetime, error: str) -> None:
        """Attempt ``n`` of ``job`` logged as a ``failure`` that sent nothing (no URL, headers or response)."""
        self._log_attempt(job, n, now, "", {}, None, None, None, error, Outcome.FAILURE)

    def _log_attempt(
        self,
        job: Job,
        n: int,
        started: datetime,
        url: str,
        request_headers: dict[str, str],
        status: int | None,
        response_body: str | None,
        duration_ms: float | None,
        error: str | None,
        outcome: Outcome,
    ) -> None:
        """Write attempt ``n`` of ``job`` to the attempt log (id ``<message id>.<n>``) and count its outcome."""
        self.writer.put(
            ATTEMPTS,
            InsertOne(
                {
                    "_id": f"{job.id}.{n}",
                    "org_id": job.org_id,
                    "message_id": job.id,
                    "endpoint_id": job.endpoint_id,
                    "attempt": n,
                    "started_at": started,
                    "url": url,
                    "request_headers": request_headers,
                    "status": status,
                    "response_body": response_body,
                    "duration_ms": duration_ms,
                    "error": error,
                    "outcome": outcome,
                }
            ),
        )
        if self._attempts is not None:
            self._attempts.labels(outcome).inc()

    def _fail_for_good(self, job: Job, error: str) -> None:
        """A message that can never be sent (bad stored data): one ``failure`` attempt, message ``failed``."""
        now = utcnow()
        n = job.attempts + 1
        self._log_unsent_failure(job, n, now, error)
        self._finish(job, MessageStatus.FAILED, None, error, now, attempts=n)

    async def _process(self, job: Job) -> None:
        endpoint = await self.endpoint(job.endpoint_id, job.org_id)
        if endpoint is None or not endpoint.get("enabled") or endpoint.get("org_id") != job.org_id:
            reason = "the endpoint was deleted" if endpoint is None else "the endpoint is disabled"
            self._finish(job, MessageStatus.FAILED, None, reason, utcnow())
            return
        rate = endpoint.get("rate_limit")
        if rate and self.limiter is not None:
            await self._rate_wait(job.endpoint_id, int(rate))
        if self.slots is None:
            await self._attempt(job, endpoint)
            return
        await self._take_slot(job, int(endpoint.get("concurrency") or self.settings.webhook_default_concurrency))
        try:
            await self._attempt(job, endpoint)
        finally:
            self._slot_holders.pop(job.id, None)
            await self.slots.release(job.endpoint_id, job.claim)

    async def _take_slot(self, job: Job, limit: int) -> None:
        """Wait for one of the endpoint's ``concurrency`` slots, shared by every worker (see slots.py)."""
        assert self.slots is not None
        pause = 0.02
        while not await self.slots.try_acquire(job.endpoint_id, job.claim, limit):
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))  # jitter
            pause = min(pause * 2, 0.5)
        self._slot_holders[job.id] = (job.endpoint_id, job.claim)

    async def _attempt(self, job: Job, endpoint: Doc) -> None:
        now = utcnow()
        if job.lease_until - now < self.lease / 2:  # the heartbeat fell behind (a busy loop): renew first
            lease_until = now + self.lease
            if not await self.repo.renew_claim(job.id, job.claim, lease_until):
                return  # another worker took it over
            job.lease_until = lease_until
        try:
            keys = self.signing_keys(endpoint, now)
        except SecretError as exc:
            log.error("cannot decrypt endpoint secret", extra={"endpoint_id": job.endpoint_id, "error": str(exc)})
            self._finish(job, MessageStatus.PENDING, None, "secret unavailable", now, now + self.lease)
            return
        if _NON_FINITE.search(job.body):  # only a body stored before payloads were strict can hold these
            try:
                jsonstrict.loads(job.body)
            except jsonstrict.InvalidJSON as exc:
                self._fail_for_good(job, f"the stored payload is not strict JSON, not sent: {exc}")
                return
        n = job.attempts + 1
        body = job.body.encode()
        ts = int(time.time())
        url = str(endpoint["url"])
        with tracer.start_as_current_span(
            "webhook.deliver",
            kind=trace.SpanKind.CLIENT,
            attributes={"webhook.message_id": job.id, "webhook.endpoint_id": job.endpoint_id, "webhook.attempt": n},
        ):
            headers: dict[str, str] = dict(endpoint.get("headers") or {})
            headers.update(
                {
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                    HEADER_ID: job.id,
                    HEADER_TIMESTAMP: str(ts),
                    HEADER_SIGNATURE: signature_header(keys, job.id, ts, body),
                }
            )
            propagate.inject(headers)
            # The start record is batched with others and not awaited: it is guarded by the claim token, so it
            # is a no-op if the attempt's result (which clears the claim) happens to be written first.
            self.writer.put(
                MESSAGES,
                UpdateOne(
                    {"_id": job.id, "claim": job.claim},
                    {"$set": {"attempts": n, "inflight": {"attempt": n, "started_at": now, "url": url}}},
                ),
            )
            result = await self.sender.send(url, headers, body, self.timeout)
        await self._record(job, endpoint, n, now, url, headers, result)

    async def _rate_wait(self, endpoint_id: str, rate: int) -> None:
        """Wait for the endpoint's rate limit (``rate`` messages per second across every worker: GCRA in
        Redis, keyed by the endpoint id, burst up to ``rate``). Fails open when Redis is unreachable."""
        assert self.limiter is not None
        limit = RateLimit(ENDPOINT_RATE_LIMIT, rate, 1.0)
        while True:
            decision = await self.limiter.hit(limit, endpoint_id)
            if decision.allowed:
                return
            await asyncio.sleep(max(decision.retry_after, 0.001))

    async def _record(
        self,
        job: Job,
        endpoint: Doc,
        n: int,
        started: datetime,
        url: str,
        headers: dict[str, str],
        result: AttemptResult,
    ) -> None:
        now = utcnow()
        outcome = Outcome.REFUSED if result.refused else classify(result.status)
        if self._latency is not None:
            self._latency.observe(result.duration_ms / 1000)
        failing_since = as_datetime(endpoint.get("failing_since"))
        if outcome is not Outcome.SUCCESS and failing_since is None:
            failing_since = now
            endpoint["failing_since"] = now
            await self.repo.set_failing_since(job.endpoint_id, now)
        elif outcome is Outcome.SUCCESS and failing_since is not None:
            endpoint["failing_since"] = None
            await self.repo.clear_failing_since(job.endpoint_id)
        retry_after = None
        retry_after_error = None
        if outcome is Outcome.THROTTLED:
            asked = read_retry_after(result.retry_after, now)
            retry_after, retry_after_error = asked.seconds, asked.error
        decision = decide(
            Outcome.FAILURE if outcome is Outcome.REFUSED else outcome,
            n - job.round_start,
            self.policy,
            now,
            retry_after=retry_after,
            failing_since=failing_since,
            disable_after=self.settings.webhook_disable_after,
        )
        error = result.error or (None if outcome is Outcome.SUCCESS else f"HTTP {result.status}")
        if retry_after_error:
            error = f"{error}; {retry_after_error}"
        self._log_attempt(
            job, n, started, url, redact(headers), result.status, result.body, result.duration_ms, error, outcome
        )
        if decision.succeeded:
            status = MessageStatus.SUCCEEDED
        elif decision.next_attempt_at is not None:
            status = MessageStatus.PENDING
        else:
            status = MessageStatus.FAILED
        self._finish(job, status, result.status, error, now, decision.next_attempt_at, attempts=n)
        if decision.disable_endpoint:
            await self.disable(endpoint, decision.disable_endpoint, now)
        if decision.exhausted and job.event_type not in SELF_EVENTS:
            await self._publish(
                EVENT_MESSAGE_FAILED,
                MessageFailed(
                    message_id=job.id,
                    endpoint_id=job.endpoint_id,
                    org_id=job.org_id,
                    event_type=job.event_type,
                    attempts=n,
                    last_error=error or "",
                ),
                job.org_id,
                job.id,
            )

    def _finish(
        self,
        job: Job,
        status: MessageStatus,
        http_status: int | None,
        error: str | None,
        now: datetime,
        next_attempt_at: datetime | None = None,
        attempts: int | None = None,
    ) -> None:
        """Release the claim with the message's new state. ``attempts`` (when an attempt was made) is set
        here too: the start record, written in another batch, may land after this update and then does
        nothing (it is guarded by the claim), and the next attempt must not reuse this attempt's number."""
        changes: dict[str, Any] = {
            "status": status,
            "next_attempt_at": to_ms(next_attempt_at) if next_attempt_at else None,
            "last_status": http_status,
            "last_error": error,
            "updated_at": now,
        }
        if attempts is not None:
            changes["attempts"] = attempts
        if self._held.get(job.id) is job:  # released: no more renewals (nor withdrawal of what follows)
            del self._held[job.id]
        self.writer.put(
            MESSAGES,
            UpdateOne({"_id": job.id, "claim": job.claim}, {"$set": changes, "$unset": {"inflight": "", "claim": ""}}),
        )

    async def disable(self, endpoint: Doc, reason: str, now: datetime) -> None:
        """Disable the endpoint (once) and announce it."""
        before = await self.repo.disable_endpoint(endpoint["_id"], reason, now)
        self.forget(endpoint["_id"])
        if self.versions is not None:
            await self.versions.bump(endpoint["org_id"])
        if before is None:
            return
        log.warning("endpoint disabled", extra={"endpoint_id": endpoint["_id"], "reason": reason})
        await self._publish(
            EVENT_ENDPOINT_DISABLED,
            EndpointDisabled(
                endpoint_id=endpoint["_id"],
                org_id=endpoint["org_id"],
                url=endpoint["url"],
                reason=reason,
                failing_since=as_datetime(before.get("failing_since")),
            ),
            endpoint["org_id"],
            endpoint["_id"],
        )

    async def _publish(self, event_type: str, data: Any, org_id: str, subject: str) -> None:
        try:
            await self.publisher.publish(event_type, data, org_id=org_id, subject=subject)
        except Exception as exc:  # an announcement must not break delivery bookkeeping
            log.error("cannot publish event", extra={"type": event_type, "error": repr(exc)})
