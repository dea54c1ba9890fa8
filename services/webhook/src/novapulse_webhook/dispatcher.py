"""Per-endpoint lanes: each endpoint has its own queue and at most ``concurrency`` attempts in flight, so
a slow or dead endpoint only ever holds its own lane."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .constants import LANE_QUEUE_LIMIT

log = logging.getLogger("novapulse.webhook.dispatcher")


@dataclass
class Job:
    """A claimed message, ready to be attempted."""

    id: str
    org_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    body: str
    attempts: int
    round_start: int
    claim: str
    lease_until: datetime
    concurrency: int = 1
    rate_limit: int | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any], claim: str, lease_until: datetime) -> Job:
        """The job of message ``doc`` claimed with token ``claim`` until ``lease_until``."""
        return cls(
            id=doc["_id"],
            org_id=doc["org_id"],
            endpoint_id=doc["endpoint_id"],
            event_id=doc["event_id"],
            event_type=doc["event_type"],
            body=doc["body"],
            attempts=int(doc.get("attempts", 0)),
            round_start=int(doc.get("round_start", 0)),
            claim=claim,
            lease_until=lease_until,
        )


class RateGate:
    """Spaces out attempts to ``rate`` per second (per process)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0

    async def wait(self) -> None:
        """Wait for the next free slot (one every ``1 / rate`` seconds)."""
        now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass
class Lane:
    """One endpoint's lane: queued jobs, how many run, at most ``concurrency`` at once, optional rate gate."""

    queue: deque[Job] = field(default_factory=deque)
    running: int = 0
    concurrency: int = 1
    gate: RateGate | None = None


class Dispatcher:
    """Runs ``process(job)`` for submitted jobs, lane by lane."""

    def __init__(self, process: Callable[[Job], Awaitable[None]], queue_limit: int = LANE_QUEUE_LIMIT) -> None:
        self._process = process
        self._limit = queue_limit
        self._lanes: dict[str, Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def has_room(self, endpoint_id: str) -> bool:
        """Whether the endpoint's lane can queue one more job (``LANE_QUEUE_LIMIT``)."""
        lane = self._lanes.get(endpoint_id)
        return lane is None or len(lane.queue) < self._limit

    def saturated(self) -> list[str]:
        """Endpoints whose lanes are busy enough that claiming more for them would only queue."""
        return [eid for eid, lane in self._lanes.items() if len(lane.queue) >= max(lane.concurrency, 1)]

    def queued(self, endpoint_id: str) -> int:
        """How many jobs of the endpoint wait in its lane (not started)."""
        lane = self._lanes.get(endpoint_id)
        return len(lane.queue) if lane is not None else 0

    def is_saturated(self, endpoint_id: str) -> bool:
        """Whether the endpoint is among :meth:`saturated`."""
        lane = self._lanes.get(endpoint_id)
        return lane is not None and len(lane.queue) >= max(lane.concurrency, 1)

    def submit(self, job: Job) -> bool:
        """Queue ``job`` in its endpoint's lane; False when the lane is full."""
        lane = self._lanes.get(job.endpoint_id)
        if lane is None:
            lane = self._lanes[job.endpoint_id] = Lane()
        if len(lane.queue) >= self._limit:
            return False
        lane.concurrency = max(1, job.concurrency)
        if job.rate_limit:
            if lane.gate is None or lane.gate.rate != job.rate_limit:
                lane.gate = RateGate(job.rate_limit)
        else:
            lane.gate = None
        lane.queue.append(job)
        self.in_flight += 1
        self._idle.clear()
        self._pump(job.endpoint_id, lane)
        return True

    def _pump(self, endpoint_id: str, lane: Lane) -> None:
        while lane.queue and lane.running < lane.concurrency:
            job = lane.queue.popleft()
            lane.running += 1
            task = asyncio.create_task(self._run(endpoint_id, lane, job), name=f"deliver-{job.id}")
            self._tasks.add(task)
            self._running[job.id] = task
            task.add_done_callback(self._tasks.discard)

    async def _run(self, endpoint_id: str, lane: Lane, job: Job) -> None:
        try:
            if lane.gate is not None:
                await lane.gate.wait()
            await self._process(job)
        except Exception:
            log.exception("delivery failed unexpectedly", extra={"message_id": job.id})
        finally:
            if self._running.get(job.id) is asyncio.current_task():
                del self._running[job.id]
            lane.running -= 1
            self.in_flight -= 1
            if lane.queue:
                self._pump(endpoint_id, lane)
            elif lane.running == 0 and self._lanes.get(endpoint_id) is lane:
                del self._lanes[endpoint_id]
            if self.in_flight == 0:
                self._idle.set()

    def cancel(self, job: Job) -> bool:
        """Withdraw ``job`` (its claim was lost): drop it from its lane's queue, or cancel its running
        attempt. True when there was something to withdraw."""
        lane = self._lanes.get(job.endpoint_id)
        if lane is not None and job in lane.queue:
            lane.queue.remove(job)
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()
            return True
        task = self._running.get(job.id)
        if task is not None and not task.done():
            task.cancel()
            return True
        return False

    async def drain(self, timeout: float) -> list[Job]:
        """Let running attempts finish; returns the queued jobs that were not started (to release)."""
        dropped: list[Job] = []
        for lane in self._lanes.values():
            self.in_flight -= len(lane.queue)
            dropped.extend(lane.queue)
            lane.queue.clear()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        return dropped
