"""The scheduler: claims due runs (leases in MongoDB) and lets the engine advance them."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from novapulse_runtime.clock import now_ms

from .constants import ORG_CAP_RETRY_MS, PURGE_BATCH
from .engine import Engine
from .observer import MetricsObserver
from .repository import Repository, Run

log = logging.getLogger(__name__)


class Scheduler:
    """Claims the runs that are due (new, retrying, past a delay or wait deadline, woken by an event, or
    whose holder died: lease ran out), up to ``slots`` at a time, and runs each through the engine. Looks
    again at once after a claim, when a run ends, or when :meth:`wake` is called (a trigger in this process
    started a run), else every ``poll_interval_seconds``.

    Fairness: an organisation holds at most ``slots_per_org`` of this worker's slots; while it is at that cap
    the claim skips its runs, so one organisation's flood of due runs cannot hold back another's.

    Global cap (``org_cap``, across every worker): each run in flight holds one of its organisation's
    ``org_cap`` slot documents (``Repository.take_org_slot``, leased like runs and renewed every third of
    the lease). A worker keeps the slots it took while it claims more runs of the organisation and gives
    back the ones it does not use every third of the lease (when it renews the others), so a flow of one
    organisation's runs costs no slot write per run. A claimed run that finds every slot held is given back
    (due again in ``ORG_CAP_RETRY_MS``), and the claim skips its organisation until then. ``None``: no
    global cap."""

    def __init__(
        self,
        repo: Repository,
        engine: Engine,
        slots: int,
        poll_interval_seconds: float,
        slots_per_org: int | None = None,
        org_cap: int | None = None,
    ) -> None:
        self.repo = repo
        self.engine = engine
        self.slots = slots
        self.slots_per_org = max(1, min(slots, slots_per_org or slots))
        self.poll_interval_seconds = poll_interval_seconds
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight: Counter[str] = Counter()
        self.org_cap = org_cap
        self.org_slots: dict[str, list[str]] = {}
        """Slot ids this worker holds, per organisation (at least its runs in flight there)."""
        self.capped_until: dict[str, int] = {}
        """Organisations whose every slot was held, and until when (epoch ms) the claim skips them."""
        self._renewed_ms = 0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for due runs now (a run was just started in this process, or a slot freed)."""
        self._wake.set()

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        stopper = asyncio.ensure_future(stop.wait())
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({stopper, waker}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            waker.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        """Schedule until ``stop`` is set; then let the runs in hand reach their next write and return."""
        failures = 0
        while not stop.is_set():
            claimed = False
            self._wake.clear()
            try:
                await self._renew_org_slots()
                while len(self.tasks) < self.slots and not stop.is_set():
                    now = now_ms()
                    full = [org for org, n in self.in_flight.items() if n >= self.slots_per_org]
                    full += [org for org, until in self.capped_until.items() if until > now and org not in full]
                    run = await self.repo.claim_due(self.engine.owner, self.engine.lease_ms, full)
                    if run is None:
                        break
                    claimed = True
                    if not await self._org_slot(run):
                        continue
                    self.in_flight[run.org_id] += 1
                    self.engine.observer.schedule_lag(max(0, now_ms() - run.due_ms) / 1000)
                    task = asyncio.create_task(self._advance(run), name=f"run-{run.id}")
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                failures = 0
            except Exception:
                failures += 1
                log.exception("claiming runs failed")
            if not claimed or len(self.tasks) >= self.slots:
                pause = self.poll_interval_seconds * (1 if not failures else min(50, 2**failures))
                await self._pause(stop, pause)
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=30)
        await self._free_unused_org_slots()

    async def _org_slot(self, run: Run) -> bool:
        """Whether ``run`` (just claimed) may go on under the global cap: a slot of its organisation this
        worker holds and does not use, or a newly taken one. Else the run is given back."""
        if self.org_cap is None:
            return True
        held = self.org_slots.setdefault(run.org_id, [])
        if self.in_flight[run.org_id] < len(held):
            return True
        slot = await self.repo.take_org_slot(run.org_id, self.org_cap, self.engine.owner, self.engine.lease_ms)
        if slot is not None:
            held.append(slot)
            return True
        retry = now_ms() + ORG_CAP_RETRY_MS
        self.capped_until[run.org_id] = retry
        await self.repo.unclaim(run, self.engine.owner, retry)
        return False

    async def _free_unused_org_slots(self) -> None:
        """Give back the slots held beyond the runs in flight (every third of the lease, and at stop)."""
        spare: list[str] = []
        for org, held in list(self.org_slots.items()):
            extra = len(held) - self.in_flight[org]
            if extra > 0:
                spare += held[-extra:]
                del held[-extra:]
            if not held:
                del self.org_slots[org]
        now = now_ms()
        self.capped_until = {org: until for org, until in self.capped_until.items() if until > now}
        if spare:
            await self.repo.free_org_slots(self.engine.owner, spare)

    async def _renew_org_slots(self) -> None:
        """Every third of the lease, give back the slots no run of this worker uses, then extend the others
        (one write for all of them). Spare slots are kept until then, so a trickle of one organisation's runs
        reuses them instead of taking and giving back a slot per run."""
        now = now_ms()
        if self.org_slots and now - self._renewed_ms >= self.engine.lease_ms / 3:
            self._renewed_ms = now
            await self._free_unused_org_slots()
            if self.org_slots:
                await self.repo.renew_org_slots(self.engine.owner, self.engine.lease_ms)

    async def _advance(self, run: Run) -> None:
        try:
            await self.engine.execute(run)
        except Exception:  # the lease runs out and the run is taken over (or retried by this worker)
            log.exception("advancing a run failed", extra={"run": run.id})
        finally:
            self.in_flight[run.org_id] -= 1
            if self.in_flight[run.org_id] <= 0:
                del self.in_flight[run.org_id]
            self.wake()


class Housekeeper:
    """Every ``interval_seconds``: sets the gauges of active runs and pending timers, and deletes runs that
    finished more than ``retention_days`` ago with their journal and kept events, ``PURGE_BATCH`` at a
    time."""

    def __init__(
        self, repo: Repository, observer: MetricsObserver | None, retention_days: int, interval_seconds: float
    ) -> None:
        self.repo = repo
        self.observer = observer
        self.retention_ms = retention_days * 86_400_000
        self.interval_seconds = interval_seconds

    async def once(self) -> int:
        """One pass; returns how many finished runs were deleted."""
        if self.observer is not None:
            active, timers = await self.repo.count_active_and_timers()
            self.observer.counts(active, timers)
        before = now_ms() - self.retention_ms
        total = 0
        while (deleted := await self.repo.purge_finished(before, PURGE_BATCH)) > 0:
            total += deleted
        await self.repo.purge_answers_and_posts(before)
        if total:
            log.info("finished runs deleted", extra={"count": total})
        return total
