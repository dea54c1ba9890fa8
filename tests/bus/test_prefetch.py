"""Read-ahead (prefetch) of the consumer's read loop, with real Redis: ``concurrency`` still bounds the
handlings in flight, entries read ahead are held (renewed) while they wait, and entries still waiting at a
stop are released to the group's other consumers, each handled once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from novapulse_devkit.testing import wait_until
from novapulse_runtime.bus import Event, EventBus
from tests.bus.conftest import running, user

pytestmark = pytest.mark.integration

BusFactory = Callable[..., EventBus]


async def test_read_ahead_keeps_handlings_in_flight_within_concurrency(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("notification", concurrency=4)
    calls: Counter[str] = Counter()
    in_flight = 0
    most_in_flight = 0
    most_held = 0

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        nonlocal in_flight, most_in_flight, most_held
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        calls[event.id] += 1
        await asyncio.sleep(0.01)
        # held = the handlings in flight plus the entries read ahead, waiting for a slot
        most_held = max(most_held, len(consumer.held))
        in_flight -= 1

    events = [bus.event("user.registered", user(i), org_id="o1", subject=f"u{i}") for i in range(80)]
    await bus.publish_events(events)
    async with running(consumer.run):
        await wait_until(lambda: len(calls) == 80, timeout=30, message="80 events handled")
        stream = bus.keys.stream("auth")

        async def all_acked() -> bool:
            return int((await bus.rt.redis.xpending(stream, "notification"))["pending"]) == 0

        await wait_until(all_acked, timeout=15, message="all 80 entries acknowledged")
    assert set(calls.values()) == {1}
    assert most_in_flight == 4  # the bound was reached and never passed
    assert most_held > 4, "no entry was ever read ahead"


async def test_entries_read_ahead_at_a_stop_are_released_and_handled_once_by_another_consumer(
    make_bus: BusFactory,
) -> None:
    bus = make_bus("auth")
    redis = bus.rt.redis
    stream = bus.keys.stream("auth")
    # claim_idle far above the waits below: a released entry must move at the next reclaim pass, not after it
    first = bus.consumer("notification", name="first", concurrency=2, claim_idle=60.0)
    calls: Counter[str] = Counter()
    started: list[str] = []

    async def handle(event: Event) -> None:
        started.append(event.id)
        await asyncio.sleep(0.3)
        calls[event.id] += 1

    first.add_handler("user.registered", handle)
    events = [bus.event("user.registered", user(i), org_id="o1", subject=f"u{i}") for i in range(10)]
    await bus.publish_events(events)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    await wait_until(lambda: len(started) == 2 and len(first.held) > 2, timeout=15, message="entries read ahead")
    stop.set()
    await asyncio.wait_for(task, timeout=15)
    assert sorted(calls) == sorted(started)  # the handlings in flight finished; nothing else started
    assert first.held == {}
    left = await redis.xpending_range(stream, "notification", "-", "+", 100, consumername="first")
    assert left, "nothing was waiting at the stop"
    assert len(left) + len(calls) <= 10
    for entry in left:  # released: reclaimable at once, no delivery counted by the release
        assert int(entry["time_since_delivered"]) >= 60_000
        assert int(entry["times_delivered"]) == 1

    second = bus.consumer("notification", name="second", concurrency=10, claim_idle=60.0)
    second.add_handler("user.registered", handle)
    async with running(second.run):
        await wait_until(lambda: len(calls) == 10, timeout=20, message="every event handled")

        async def all_acked() -> bool:
            return int((await redis.xpending(stream, "notification"))["pending"]) == 0

        await wait_until(all_acked, timeout=15, message="every entry acknowledged")
    assert set(calls.values()) == {1}
    assert set(calls) == {e.id for e in events}
