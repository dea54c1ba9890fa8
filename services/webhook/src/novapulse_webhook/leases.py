"""The claims a delivery worker holds: every message it claimed and has not finished, renewed every quarter
of the lease (``WEBHOOK_LEASE`` seconds; a claim younger than about a quarter lease waits for the next round)
while the worker lives, and the endpoint slots (slots.py) its running attempts hold or keep for a hand-over.

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
from novapulse_runtime.process import retry_pause

from .dispatcher import Job
from .repository import Repository
from .slots import EndpointSlots

log = logging.getLogger("novapulse.webhook.worker")

RENEW_BELOW = 0.8
"""A held lease is renewed once at most this share of it is left (a quarter lease old, with a margin for the
heartbeat's timing); younger claims wait for the next round."""
SLOT_PAUSE_MAX = 0.1
"""Longest pause in seconds between two tries for a slot of a busy endpoint (from 20 ms, doubling)."""
SLOT_HANDOVER = 0.25
"""Seconds a slot given back is kept for the next queued attempt of the same endpoint in this process
before it is removed in Redis (the next attempt reads the endpoint's version first: one Redis round trip,
and on a loaded 2-core machine its turn of the event loop can take tens of milliseconds)."""

Withdraw = Callable[[Job], bool]
"""Withdraws a job whose claim is lost (``Dispatcher.cancel``); True when there was something to withdraw."""


class Leases:
    """Held messages (by id) and held endpoint slots; ``lease`` is how long a claim lasts unrenewed."""

    def __init__(self, repo: Repository, lease: timedelta, slots: EndpointSlots | None = None) -> None:
        self.repo = repo
        self.lease = lease
        self.slots = slots
        self.held: dict[str, Job] = {}  # claimed by this worker and not finished: their leases are renewed
        self._slot_holders: dict[str, tuple[str, str]] = {}  # message id -> (endpoint id, slot token) in use
        self._spare: dict[str, list[str]] = {}  # endpoint id -> slot tokens given back, kept for a hand-over
        self._waiting: dict[str, int] = {}  # endpoint id -> attempts of this process waiting for a slot
        self._freed: dict[str, asyncio.Event] = {}  # endpoint id -> wakes its waiters when a slot is given back
        self._spare_timers: dict[str, asyncio.TimerHandle] = {}  # slot token kept -> when it is removed
        self._asking: set[str] = set()  # endpoints whose slot an attempt of this process is asking Redis for
        self._releases: set[asyncio.Future[None]] = set()
        self.demand: Callable[[str], int] = lambda endpoint_id: 0
        """How many more attempts of an endpoint this process has queued (``Dispatcher.queued``)."""

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
                await self.slots.renew(self.slots_held())

    async def renew(self, withdraw: Withdraw) -> int:
        """One renewal round (one bulk write; one more read when some claims were lost) of the leases with at
        most ``RENEW_BELOW`` of their length left; returns how many leases were renewed. A claim taken since
        the last round is left for the next one: in a pipeline that delivers within a quarter lease most
        messages then never cost a renewal write, while a lease that is not renewed is still withdrawn a
        quarter lease before it ends (:meth:`withdraw_expiring`)."""
        now = utcnow()
        due = now + self.lease * RENEW_BELOW
        jobs = [j for j in self.held.values() if j.lease_until <= due]
        if not jobs:
            return 0
        until = now + self.lease
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
        (slots.py): a slot an attempt of this process just gave back (:meth:`release_slot`) is taken over
        at once, with no round trip; else taken in Redis, retrying after 20 ms doubling to 100 ms, with
        jitter (or as soon as an attempt of this process gives one back). Of this process's attempts waiting
        for one endpoint, one asks Redis at a time (the others wait for its answer), so a busy endpoint
        shared with other workers costs one script call per try, not one per waiting attempt."""
        assert self.slots is not None
        eid = job.endpoint_id
        tries = 0
        self._waiting[eid] = self._waiting.get(eid, 0) + 1
        try:
            while True:
                token = self._take_spare(eid)
                if token is not None:
                    break
                if eid not in self._asking:  # one attempt per endpoint asks Redis; the others wait for it
                    self._asking.add(eid)
                    try:
                        taken = await self.slots.try_acquire(eid, job.claim, limit)
                    finally:
                        self._asking.discard(eid)
                        self._wake(eid)  # the next waiter asks now (a slot was free, more may be)
                    if taken:
                        token = job.claim
                        break
                freed = self._freed.setdefault(eid, asyncio.Event())  # set when a slot is given back here
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(retry_pause(tries, 0.02, SLOT_PAUSE_MAX) * random.uniform(0.5, 1.5)):
                        await freed.wait()
                tries += 1
        finally:
            left = self._waiting[eid] - 1
            if left:
                self._waiting[eid] = left
            else:
                del self._waiting[eid]
                self._freed.pop(eid, None)
        self._slot_holders[job.id] = (eid, token)

    async def release_slot(self, job: Job) -> None:
        """Give back the slot ``job`` holds: kept for a moment (``SLOT_HANDOVER``) for the next attempt of
        the same endpoint when this process has one waiting or queued (``demand``), else removed in Redis.
        Either way the endpoint never has more than ``concurrency`` attempts in flight: a slot kept is one
        member of the endpoint's set, used by at most one attempt at a time."""
        assert self.slots is not None
        held = self._slot_holders.pop(job.id, None)
        if held is None:
            return
        eid, token = held
        if self._waiting.get(eid) or self.demand(eid):
            self._spare.setdefault(eid, []).append(token)
            self._spare_timers[token] = asyncio.get_running_loop().call_later(
                SLOT_HANDOVER, self._expire_spare, eid, token
            )
            self._wake(eid)
            return
        await self.slots.release(eid, token)

    def _wake(self, endpoint_id: str) -> None:
        freed = self._freed.pop(endpoint_id, None)
        if freed is not None:
            freed.set()

    def _take_spare(self, endpoint_id: str) -> str | None:
        spare = self._spare.get(endpoint_id)
        if not spare:
            return None
        token = spare.pop()
        if not spare:
            del self._spare[endpoint_id]
        timer = self._spare_timers.pop(token, None)
        if timer is not None:  # a slot is handed over again and again under one token: its old timer must go
            timer.cancel()
        return token

    def _expire_spare(self, endpoint_id: str, token: str) -> None:
        self._spare_timers.pop(token, None)
        spare = self._spare.get(endpoint_id)
        if spare is None or token not in spare:
            return  # taken over
        spare.remove(token)
        if not spare:
            del self._spare[endpoint_id]
        assert self.slots is not None
        task = asyncio.ensure_future(self.slots.release(endpoint_id, token))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def release_spares(self) -> None:
        """Give back every slot kept for a hand-over (the worker stops)."""
        spares, self._spare = self._spare, {}
        for timer in self._spare_timers.values():
            timer.cancel()
        self._spare_timers.clear()
        if self.slots is not None:  # asked for in one turn: one batch
            slots = self.slots
            await asyncio.gather(*(slots.release(eid, token) for eid, tokens in spares.items() for token in tokens))
        if self._releases:
            await asyncio.wait(set(self._releases), timeout=2)

    def slots_held(self) -> list[tuple[str, str]]:
        """Every ``(endpoint id, token)`` slot this process holds in Redis: in use and kept for a hand-over."""
        return [*self._slot_holders.values(), *((e, t) for e, tokens in self._spare.items() for t in tokens)]
