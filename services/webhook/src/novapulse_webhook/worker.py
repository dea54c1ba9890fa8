"""The delivery worker: fans events out to endpoints, claims due messages, attempts them lane by lane, and
records every attempt. :class:`DeliveryWorker` composes the parts, each named by its role:

- ``endpoints.py`` — the endpoint cache (single-flight loads, endpoint version checks);
- ``intake.py`` — a fanned-out event becomes messages, claimed at insert;
- ``poller.py`` — due messages become claimed jobs;
- ``leases.py`` — the claims and endpoint slots this worker holds, renewed by the heartbeat;
- ``dispatcher.py`` — per-endpoint lanes running ``attempt.Attempts.process``;
- ``attempt.py`` — one signed HTTP attempt and the judgement of its answer;
- ``recorder.py`` — settling an attempt (attempt log, message update, metrics, announcements);
- ``writer.py`` — the group commit of the bookkeeping.

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
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo.errors import PyMongoError

from novapulse_runtime.clock import utcnow
from novapulse_runtime.documents import Doc
from novapulse_runtime.metrics import Metrics
from novapulse_runtime.ratelimit import RateLimiter
from novapulse_runtime.secretbox import SecretBox

from .attempt import Attempts
from .dispatcher import Dispatcher, Job
from .domain import RetryPolicy
from .endpoints import EndpointCache
from .intake import Intake
from .leases import Leases
from .poller import Poller
from .ports import EventPublisher
from .recorder import Recorder
from .repository import Repository
from .sender import Sender
from .settings import WebhookSettings
from .slots import EndpointSlots
from .versions import EndpointVersions
from .writer import BatchWriter

log = logging.getLogger("novapulse.webhook.worker")


class DeliveryWorker:
    """Owns the lanes, the batch writer, the leases and the caches; :meth:`run` is the worker's main loop
    and :meth:`on_event` the fan-out consumer's handler.

    :param publisher: announces ``webhook.endpoint.disabled`` and ``webhook.message.failed``.
    :param metrics: where the attempt and batch-writer metrics go (``None``: not counted).
    :param versions: endpoint versions (read-your-writes of the caches; ``None``: time-to-live only).
    :param limiter: endpoints' rate limits across every worker (``None``: per process).
    :param slots: endpoints' concurrency across every worker (``None``: per process).
    """

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
        self.settings = settings
        self.sender = sender
        self.limiter = limiter
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.writer = BatchWriter(repo, metrics=metrics)
        self.endpoints = EndpointCache(repo, versions)
        self.leases = Leases(repo, self.lease, slots)
        self.recorder = Recorder(
            repo,
            self.writer,
            self.leases,
            self.endpoints,
            publisher,
            RetryPolicy(
                settings.webhook_retry_schedule, settings.webhook_retry_jitter, settings.webhook_retry_after_max
            ),
            settings.webhook_disable_after,
            metrics,
        )
        self.attempts = Attempts(
            repo,
            self.writer,
            self.endpoints,
            self.leases,
            self.recorder,
            sender,
            box,
            timeout=settings.webhook_timeout,
            default_concurrency=settings.webhook_default_concurrency,
            limiter=limiter,
        )
        self.dispatcher = Dispatcher(self.attempts.process)
        self.leases.demand = self.dispatcher.queued  # a slot given back goes to the lane's next attempt
        self._wake = asyncio.Event()
        self.intake = Intake(
            repo, self.writer, self.endpoints, self.dispatcher, self.recorder, self.lease, self.submit, self.wake
        )
        self.poller = Poller(
            repo,
            self.endpoints,
            self.dispatcher,
            self.recorder,
            self.lease,
            settings.webhook_max_in_flight,
            self.submit,
        )

    async def on_event(
        self,
        event_id: str,
        org_id: str,
        event_type: str,
        data: Mapping[str, Any],
        when: datetime,
        *,
        application: bool = False,
    ) -> int:
        """Fan an event out to the organisation's subscribed endpoints (see :meth:`.intake.Intake.on_event`);
        returns how many messages were stored."""
        return await self.intake.on_event(event_id, org_id, event_type, data, when, application=application)

    def submit(self, job: Job, endpoint: Doc | None) -> bool:
        """Put a claimed ``job`` in its endpoint's lane, with the endpoint's ``concurrency`` (and, without a
        shared limiter, its ``rate_limit`` in messages per second); False when the lane is full."""
        if endpoint is not None:
            job.concurrency = int(endpoint.get("concurrency") or self.settings.webhook_default_concurrency)
            # With Redis the endpoint's rate limit is enforced across every worker in Attempts; the lane's
            # own gate (per process) is only the fallback without a limiter.
            job.rate_limit = None if self.limiter is not None else endpoint.get("rate_limit")
        if not self.dispatcher.submit(job):
            return False
        self.leases.hold(job)
        return True

    def wake(self) -> None:
        """Ask the poller to look for due messages now."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Claim due messages until ``stop``; then finish running attempts (up to ``SHUTDOWN_TIMEOUT``
        seconds), give back what was claimed and never started, and flush the logs."""
        writer_stop = asyncio.Event()
        writer = asyncio.create_task(self.writer.run(writer_stop), name="webhook-writer")
        beat_stop = asyncio.Event()
        beat = asyncio.create_task(self.leases.heartbeat(beat_stop, self.dispatcher.cancel), name="webhook-leases")
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
                    beat = asyncio.create_task(
                        self.leases.heartbeat(beat_stop, self.dispatcher.cancel), name="webhook-leases"
                    )
                try:
                    await self.poller.poll_once()
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
            self.intake.closing = True
            dropped = await self.dispatcher.drain(self.settings.shutdown_timeout)
            beat_stop.set()
            await beat
            now = utcnow()
            for job in dropped:  # queued but never started: give them back at once
                self.leases.held.pop(job.id, None)
                self.recorder.release(job.id, job.claim, now)
            await self.leases.release_spares()
            writer_stop.set()
            await writer
            await self.sender.close()
