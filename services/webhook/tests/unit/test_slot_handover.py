"""Endpoint slots handed over inside one worker: a slot an attempt gives back while the same endpoint has
more attempts waiting or queued in this process goes to the next one without a Redis round trip; never more
than ``concurrency`` attempts hold slots; a slot nobody takes over is removed soon after."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from novapulse_devkit.testing import wait_until
from novapulse_webhook.dispatcher import Job
from novapulse_webhook.leases import Leases

EP = "ep1"


class Slots:
    """An endpoint semaphore with the interface of :class:`~novapulse_webhook.slots.EndpointSlots`: members
    by token, ``limit`` at most, every call counted."""

    def __init__(self) -> None:
        self.members: set[str] = set()
        self.acquires = 0
        self.releases = 0
        self.asking = 0
        self.most_asking = 0

    async def try_acquire(self, endpoint_id: str, token: str, limit: int) -> bool:
        self.acquires += 1
        self.asking += 1
        self.most_asking = max(self.most_asking, self.asking)
        await asyncio.sleep(0.001)  # a round trip
        self.asking -= 1
        if token in self.members or len(self.members) < limit:
            self.members.add(token)
            return True
        return False

    async def release(self, endpoint_id: str, token: str) -> None:
        self.releases += 1
        self.members.discard(token)

    async def renew(self, held: Any) -> None:
        return None


def job(n: int) -> Job:
    return Job(f"m{n}", "o1", EP, "e", "t", "{}", 0, 0, f"claim{n}", datetime(2026, 11, 30, tzinfo=UTC), 2)


def leases(slots: Slots, queued: int = 0) -> Leases:
    made = Leases(cast(Any, None), timedelta(seconds=10), cast(Any, slots))
    made.demand = lambda endpoint_id: queued
    return made


async def test_a_slot_goes_to_the_next_queued_attempt_without_a_round_trip() -> None:
    slots = Slots()
    lease = leases(slots, queued=1)
    await lease.take_slot(job(1), 2)
    assert (slots.acquires, slots.members) == (1, {"claim1"})
    await lease.release_slot(job(1))
    assert slots.members == {"claim1"}
    assert slots.releases == 0
    await lease.take_slot(job(2), 2)
    assert slots.acquires == 1
    assert slots.members == {"claim1"}
    assert lease.slots_held() == [(EP, "claim1")]
    lease.demand = lambda endpoint_id: 0
    await lease.release_slot(job(2))
    assert slots.members == set()
    assert slots.releases == 1
    assert lease.slots_held() == []


async def test_without_demand_a_slot_is_removed_at_once_and_an_unclaimed_one_soon_after() -> None:
    slots = Slots()
    lease = leases(slots)
    await lease.take_slot(job(1), 2)
    await lease.release_slot(job(1))
    assert slots.members == set()
    lease.demand = lambda endpoint_id: 1  # a queued attempt that never comes for it (its endpoint was disabled)
    await lease.take_slot(job(2), 2)
    await lease.release_slot(job(2))
    assert slots.members == {"claim2"}
    await wait_until(lambda: not slots.members, timeout=5, interval=0.005, message="not slots.members")
    assert lease.slots_held() == []


async def test_a_waiting_attempt_gets_a_slot_given_back_and_the_limit_holds() -> None:
    slots = Slots()
    lease = leases(slots)
    await lease.take_slot(job(1), 1)
    waiter = asyncio.create_task(lease.take_slot(job(2), 1))
    await wait_until(
        lambda: slots.acquires >= 2, timeout=5, interval=0.005, message="slots.acquires >= 2"
    )  # it tried, found the endpoint full, and waits
    assert not waiter.done()
    assert slots.members == {"claim1"}
    await lease.release_slot(job(1))  # someone waits here: handed over
    async with asyncio.timeout(5):
        await waiter
    assert slots.members == {"claim1"}
    assert slots.releases == 0
    assert lease.slots_held() == [(EP, "claim1")]


async def test_stopping_gives_back_the_slots_kept_for_a_hand_over() -> None:
    slots = Slots()
    lease = leases(slots, queued=3)
    await lease.take_slot(job(1), 2)
    await lease.release_slot(job(1))
    assert slots.members == {"claim1"}
    await lease.release_spares()
    assert slots.members == set()
    assert lease.slots_held() == []


async def test_attempts_waiting_for_one_endpoint_ask_redis_one_at_a_time() -> None:
    slots = Slots()
    lease = leases(slots)
    await lease.take_slot(job(1), 1)
    waiters = [asyncio.create_task(lease.take_slot(job(n), 1)) for n in range(2, 6)]
    await wait_until(
        lambda: slots.acquires >= 8, timeout=5, interval=0.005, message="slots.acquires >= 8"
    )  # they keep trying while the endpoint is full
    assert slots.most_asking == 1
    assert not any(w.done() for w in waiters)
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_a_slot_handed_over_again_is_kept_for_its_latest_release() -> None:
    """One token goes from attempt to attempt; each release keeps it for ``SLOT_HANDOVER`` from then, not
    from the first release (an old timer removed a slot that had just been given back again)."""
    slots = Slots()
    lease = leases(slots, queued=1)
    await lease.take_slot(job(1), 2)
    for n in range(2, 6):
        await lease.release_slot(job(n - 1))
        await lease.take_slot(job(n), 2)
        assert lease._spare_timers == {}  # the kept slot's timer went with the hand-over
    await lease.release_slot(job(5))
    assert list(lease._spare_timers) == ["claim1"]
    assert slots.members == {"claim1"}
    await lease.release_spares()
    assert lease._spare_timers == {}
    assert slots.members == set()
