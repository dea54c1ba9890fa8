"""The poller: claims due messages (retries, API-created messages, claims whose lease ran out) into their
lanes, up to ``WEBHOOK_MAX_IN_FLIGHT`` held at once."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from novapulse_runtime.clock import utcnow
from novapulse_runtime.documents import Doc

from .dispatcher import Dispatcher, Job
from .endpoints import EndpointCache
from .intake import Submit
from .recorder import Recorder
from .repository import Repository

log = logging.getLogger("novapulse.webhook.worker")

CLAIM_BATCH = 100
"""Most messages claimed by one poll."""


class Poller:
    """One poll is :meth:`poll_once`; the worker's loop calls it every ``WEBHOOK_POLL_INTERVAL`` seconds
    or when woken.

    :param lease: how long a claim lasts before it must be renewed.
    :param max_in_flight: most messages held at once (``WEBHOOK_MAX_IN_FLIGHT``).
    """

    def __init__(
        self,
        repo: Repository,
        endpoints: EndpointCache,
        dispatcher: Dispatcher,
        recorder: Recorder,
        lease: timedelta,
        max_in_flight: int,
        submit: Submit,
    ) -> None:
        self.repo = repo
        self.endpoints = endpoints
        self.dispatcher = dispatcher
        self.recorder = recorder
        self.lease = lease
        self.max_in_flight = max_in_flight
        self.submit = submit

    async def poll_once(self) -> int:
        """Claim due messages into their lanes, most overdue first, skipping endpoints whose lanes are
        saturated; a claimed message whose last attempt was lost with its worker is logged ``lost`` first.
        One read finds up to ``CLAIM_BATCH`` candidates, then each is claimed atomically (a candidate another
        worker claimed first is skipped). Returns how many were claimed."""
        room = min(CLAIM_BATCH, self.max_in_flight - self.dispatcher.in_flight)
        if room <= 0:
            return 0
        candidates = await self.repo.due_messages(utcnow(), room, self.dispatcher.saturated())
        claimed = 0
        for candidate in candidates:
            if self.dispatcher.in_flight >= self.max_in_flight:
                break
            if self.dispatcher.is_saturated(candidate["endpoint_id"]):  # filled by the claims before it
                continue
            now = utcnow()
            lease_until = now + self.lease
            token = uuid.uuid4().hex
            before = await self.repo.claim(candidate, now, lease_until, token)
            if before is None:  # another worker claimed it first
                continue
            claimed += 1
            endpoint: Doc | None = None
            try:
                inflight = before.get("inflight")
                if inflight:
                    self.recorder.log_lost(before, inflight)
                endpoint = await self.endpoints.endpoint(before["endpoint_id"], before["org_id"])
            except Exception:  # the message is held now: it still goes to its lane, process() finishes it
                log.exception("preparing a claimed message failed", extra={"message_id": before.get("_id")})
            if not self.submit(Job.from_doc(before, token, lease_until), endpoint):
                self.recorder.release(before["_id"], token)  # lane full: give it back now, not when the lease ends
                break
        return claimed
