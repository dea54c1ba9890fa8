"""The claims a delivery worker holds: every message it claimed and has not finished, renewed every quarter
of the lease (``WEBHOOK_LEASE`` seconds) while the worker lives, and the endpoint slots (slots.py) its
running attempts hold.

A renewal is guarded by the claim token; a message whose claim is no longer ours (another worker took it
after our lease ran out) is withdrawn at once, and a running attempt whose lease could not be renewed in time
is cancelled before the lease ends, so no message is ever attempted by two workers at the same time (as long
as this process's event loop is not stalled for longer than a lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import timedelta

from novapulse_runtime.clock import utcnow

from .dispatcher import Job
from .repository import Repository
from .slots import EndpointSlots

log = logging.getLogger("novapulse.webhook.worker")

Withdraw = Callable[[Job], bool]
"""Withdraws a job whose claim is lost (``Dispatcher.cancel``); True when there was something to withdraw."""


class Leases:
    """Held messages (by id) and held endpoint slots; ``lease`` is how long a claim lasts unrenewed."""

    def __init__(self, repo: Repository, lease: timedelta, slots: EndpointSlots | None = None) -> None:
        self.repo = repo
        self.lease = lease
        self.slots = slots
        self.held: dict[str, Job] = {}  # claimed by this worker and not finished: their leases are renewed
        self._slot_holders: dict[str, tuple[str, str]] = {}  # message id -> (endpoint id, claim) holding a slot

    def hold(self, job: Job) -> None:
        """Renew ``job``'s lease from now on."""
        self.held[job.id] = job

    def drop(self, job: Job) -> None:
        """Stop renewing ``job``'s lease (finished, released or lost); a newer job for the same message is
        left alone."""
        if self.held.get(job.id) is job:
            del self.held[job.id]

    async def heartbeat(self, stop: asyncio.Event, withdraw: Withdraw) -> None:
        """Renew the lease of every held message and slot, every quarter of the lease, until ``stop``;
        ``withdraw`` takes back the jobs whose claims are lost."""
        interval = self.lease.total_seconds() / 4
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()
            try:
                await self.renew(withdraw)
            except Exception:
                log.exception("renewing leases failed")
            self.withdraw_expiring(withdraw)
            if self.slots is not None:
                await self.slots.renew(list(self._slot_holders.values()))

    async def renew(self, withdraw: Withdraw) -> int:
        """One renewal round (one bulk write; one more read when some claims were lost); returns how many
        leases were renewed."""
        jobs = list(self.held.values())
        if not jobs:
            return 0
        until = utcnow() + self.lease
        if await self.repo.renew_claims([(j.id, j.claim) for j in jobs], until) == len(jobs):
            for j in jobs:
                j.lease_until = until
            return len(jobs)
        claims = await self.repo.claims(j.id for j in jobs)
        ours = 0
        for j in jobs:
            if claims.get(j.id) == j.claim:
                j.lease_until = until
                ours += 1
            elif self.held.get(j.id) is j:  # finished meanwhile (claim cleared) or taken over: not ours now
                self.held.pop(j.id, None)
                if withdraw(j):
                    log.warning("claim lost; attempt withdrawn", extra={"message_id": j.id})
        return ours

    def withdraw_expiring(self, withdraw: Withdraw) -> None:
        """Withdraw what we hold whose lease ends within a quarter lease (renewals kept failing)."""
        limit = utcnow() + self.lease / 4
        for j in list(self.held.values()):
            if j.lease_until <= limit:
                self.held.pop(j.id, None)
                if withdraw(j):
                    log.warning("lease could not be renewed; attempt withdrawn", extra={"message_id": j.id})

    async def take_slot(self, job: Job, limit: int) -> None:
        """Wait for one of the endpoint's ``limit`` (its ``concurrency``) slots, shared by every worker
        (slots.py); retries after 20 ms doubling to 500 ms, with jitter."""
        assert self.slots is not None
        pause = 0.02
        while not await self.slots.try_acquire(job.endpoint_id, job.claim, limit):
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))  # jitter
            pause = min(pause * 2, 0.5)
        self._slot_holders[job.id] = (job.endpoint_id, job.claim)

    async def release_slot(self, job: Job) -> None:
        """Give back the slot ``job`` holds."""
        assert self.slots is not None
        self._slot_holders.pop(job.id, None)
        await self.slots.release(job.endpoint_id, job.claim)
