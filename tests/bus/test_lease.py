"""Leases of held entries: a consumer renews the entries it holds (in flight or waiting for a retry) every
``claim_idle / 3``, so a handler or a backoff longer than ``claim_idle`` is never taken over by another
consumer, while a consumer that stops renewing (killed) loses its entries within
``claim_idle + claim_interval`` (docs/events.md §4)."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from novapulse_devkit.testing import Servers, wait_until
from novapulse_runtime.bus import Consumer, Event, EventBus, PermanentError
from tests.bus.conftest import RuntimeFactory, running, user

BusFactory = Callable[..., EventBus]

CLAIM_IDLE = 0.9  # seconds; renewal every 0.3 s
CLAIM_INTERVAL = 0.1  # seconds between reclaim passes


def renewed(bus: EventBus, stream: str, group: str = "notification") -> float:
    """Entries renewed so far (``novapulse_events_renewed_total``) in ``bus``'s process registry."""
    value = bus.rt.metrics.registry.get_sample_value(
        "novapulse_events_renewed_total", {"stream": stream, "group": group}
    )
    return value or 0.0


def reclaimed(bus: EventBus, stream: str, group: str = "notification") -> float:
    value = bus.rt.metrics.registry.get_sample_value(
        "novapulse_events_reclaimed_total", {"stream": stream, "group": group}
    )
    return value or 0.0


def consumer(bus: EventBus, name: str, **kw: float) -> Consumer:
    options: dict[str, float] = {"claim_idle": CLAIM_IDLE, "claim_interval": CLAIM_INTERVAL, "handler_timeout": 30}
    return bus.consumer("notification", name=name, stats_interval=3600.0, **(options | kw))  # type: ignore[arg-type]


async def test_a_handler_slower_than_claim_idle_runs_once_with_two_consumers(make_bus: BusFactory) -> None:
    """Six events whose handlers outlast claim_idle (they end only after every holder renewed its entries
    four times, 1.2 s > 0.9 s) with two consumers reclaiming every 0.1 s: each event is handled exactly once,
    never twice at a time, nothing is reclaimed, and each entry was delivered once."""
    producer = make_bus("auth")
    stream = producer.stream()
    a_bus, b_bus = make_bus("notification"), make_bus("notification")
    a, b = consumer(a_bus, "a"), consumer(b_bus, "b")
    release = asyncio.Event()
    running_now: dict[str, int] = {}
    calls: list[str] = []
    overlap: list[str] = []

    async def handle(event: Event) -> None:
        running_now[event.id] = running_now.get(event.id, 0) + 1
        if running_now[event.id] > 1:
            overlap.append(event.id)
        calls.append(event.id)
        try:
            await release.wait()
        finally:
            running_now[event.id] -= 1

    a.add_handler("user.registered", handle)
    b.add_handler("user.registered", handle)
    async with running(a.run, b.run):
        await wait_until(lambda: a.renewal_passes >= 1 and b.renewal_passes >= 1, message="both renewing")
        sent = [producer.event("user.registered", user(i), org_id="o1", subject=f"u{i}") for i in range(6)]
        await producer.publish_events(sent)
        await wait_until(lambda: len(calls) == 6, message="six handlers running")
        passes = (a.renewal_passes, b.renewal_passes)
        await wait_until(
            lambda: a.renewal_passes >= passes[0] + 4 and b.renewal_passes >= passes[1] + 4,
            message="four renewal passes of each consumer (longer than claim_idle)",
        )
        assert renewed(a_bus, stream) + renewed(b_bus, stream) >= 6 * 3
        release.set()
        await wait_until(lambda: _no_pending(producer, stream), timeout=10, message="every entry acknowledged")
    assert sorted(calls) == sorted(e.id for e in sent)  # exactly once each
    assert overlap == []
    assert reclaimed(a_bus, stream) == reclaimed(b_bus, stream) == 0


async def _no_pending(bus: EventBus, stream: str) -> bool:
    return int((await bus.rt.redis.xpending(stream, "notification"))["pending"]) == 0


async def test_a_retry_backoff_longer_than_claim_idle_stays_with_its_consumer(make_bus: BusFactory) -> None:
    """The first attempt fails; the retry waits 1 to 2 s (backoff_base 2 s), more than claim_idle (0.9 s),
    while another consumer reclaims every 0.1 s: the waiting entry is renewed, so the same consumer retries
    it (delivery 2), nobody reclaims it, and the handler runs twice in all."""
    producer = make_bus("auth")
    stream = producer.stream()
    a_bus, b_bus = make_bus("notification"), make_bus("notification")
    a = consumer(a_bus, "a", backoff_base=2.0)
    b = consumer(b_bus, "b", backoff_base=2.0)
    attempts: list[tuple[str, int]] = []

    async def handle_a(event: Event) -> None:
        attempts.append(("a", event.deliveries))
        if event.deliveries == 1:
            raise RuntimeError("first attempt fails")

    async def handle_b(event: Event) -> None:
        attempts.append(("b", event.deliveries))
        if event.deliveries == 1:
            raise RuntimeError("first attempt fails")

    a.add_handler("user.registered", handle_a)
    b.add_handler("user.registered", handle_b)
    async with running(a.run, b.run):
        await producer.publish("user.registered", user(1), org_id="o1", subject="u1")
        await wait_until(lambda: len(attempts) == 2, timeout=10, message="the retry")
        await wait_until(lambda: _no_pending(producer, stream), timeout=10, message="acknowledged")
    holder = attempts[0][0]
    assert attempts == [(holder, 1), (holder, 2)]
    assert reclaimed(a_bus, stream) == reclaimed(b_bus, stream) == 0


async def test_renewal_stops_once_an_entry_is_acknowledged_or_dead_lettered(make_bus: BusFactory) -> None:
    """While a handler runs its entry is renewed; once acknowledged (success) or dead-lettered (rejected),
    three more renewal passes renew nothing and nothing is pending."""
    producer = make_bus("auth")
    stream = producer.stream()
    bus = make_bus("notification")
    c = consumer(bus, "a")
    release = asyncio.Event()

    @c.on("user.registered")
    async def handle(event: Event) -> None:
        if event.subject == "bad":
            raise PermanentError("rejected")
        await release.wait()

    async with running(c.run):
        await producer.publish("user.registered", user(1), org_id="o1", subject="good")
        await producer.publish("user.registered", user(2), org_id="o1", subject="bad")
        await wait_until(lambda: renewed(bus, stream) >= 2, timeout=10, message="the running entry renewed")

        async def dead_lettered() -> bool:
            return int(await producer.rt.redis.xlen(bus.keys.dead("notification"))) == 1

        await wait_until(dead_lettered, message="the rejected entry dead-lettered")
        release.set()
        await wait_until(lambda: _no_pending(producer, stream), timeout=10, message="acknowledged")
        count, passes = renewed(bus, stream), c.renewal_passes
        await wait_until(lambda: c.renewal_passes >= passes + 3, timeout=10, message="three more passes")
        assert renewed(bus, stream) == count
        assert await _no_pending(producer, stream)


async def test_renewal_never_takes_back_an_entry_another_consumer_took_over(make_bus: BusFactory) -> None:
    """An entry taken over by another consumer (as after a stall of its holder) is not renewed by its former
    holder: it stays with the new owner."""
    producer = make_bus("auth")
    stream = producer.stream()
    bus = make_bus("notification")
    c = consumer(bus, "a")
    release = asyncio.Event()
    started = asyncio.Event()

    @c.on("user.registered")
    async def handle(event: Event) -> None:
        started.set()
        await release.wait()

    redis = producer.rt.redis
    async with running(c.run):
        await producer.publish("user.registered", user(1), org_id="o1", subject="u1")
        await wait_until(started.is_set, message="handler running")
        [entry] = await redis.xpending_range(stream, "notification", "-", "+", 10)

        async def intruder_renews() -> None:
            # a live new owner renews its entry well within claim_idle, as a real consumer does; one that
            # stopped renewing would rightly lose the entry to the reclaim pass after claim_idle
            while True:
                await redis.xclaim(stream, "notification", "intruder", 0, [entry["message_id"]], justid=True)
                await asyncio.sleep(CLAIM_IDLE / 4)

        renewer = asyncio.create_task(intruder_renews())
        try:
            await wait_until(lambda: c.renewal_passes >= 1, timeout=10, message="a renewal pass")
            passes, count = c.renewal_passes, renewed(bus, stream)
            await wait_until(lambda: c.renewal_passes >= passes + 3, timeout=10, message="three renewal passes")
            [after] = await redis.xpending_range(stream, "notification", "-", "+", 10)
            assert after["consumer"] == "intruder"
            assert renewed(bus, stream) == count  # the former holder never claimed it back
            assert reclaimed(bus, stream) == 0
        finally:
            renewer.cancel()
        release.set()


async def test_a_failed_renewal_is_logged_and_the_consumer_goes_on(
    make_bus: BusFactory, make_runtime: RuntimeFactory, redis_url: str, names: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The consumer connects as a Redis user that may not run XPENDING, so every renewal pass fails
    (NOPERM): each failure is logged at WARNING, the passes go on, and the consumer keeps handling and
    acknowledging events."""
    if not redis_url.startswith("redis://"):
        pytest.skip("builds an ACL user on one server (a cluster keeps ACL users per node)")
    producer = make_bus("auth")
    stream = producer.stream()
    redis = producer.rt.redis
    user_name = f"lease-{names}"
    await redis.acl_setuser(
        user_name, enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], commands=["+@all", "-xpending"]
    )
    try:
        url = redis_url.replace("redis://", f"redis://{user_name}:pw@", 1)
        bus = make_bus("notification", rt=make_runtime("notification", redis=url))
        c = consumer(bus, "a")
        release = asyncio.Event()
        handled: list[str] = []

        @c.on("user.registered")
        async def handle(event: Event) -> None:
            if event.subject == "slow":
                await release.wait()
            handled.append(event.subject or "")

        def failures() -> int:
            return sum(1 for r in caplog.records if r.getMessage().startswith("lease renewal failed"))

        async with running(c.run) as stop:
            await producer.publish("user.registered", user(1), org_id="o1", subject="slow")
            await wait_until(lambda: failures() >= 2, timeout=10, message="two failed renewals logged")
            release.set()
            await producer.publish("user.registered", user(2), org_id="o1", subject="next")
            await wait_until(lambda: handled == ["slow", "next"], timeout=10, message="both events handled")
            await wait_until(lambda: _no_pending(producer, stream), timeout=10, message="acknowledged")
            assert not stop.is_set()
    finally:
        await redis.acl_deluser(user_name)


# Kill -9 of a consumer process holding entries mid-burst ------------------------------------------------------

KILL_CLAIM_IDLE = 3.0  # seconds
KILL_INTERVAL = 0.3  # claim_idle / 10: seconds between reclaim passes
BOUND_S = KILL_CLAIM_IDLE + KILL_INTERVAL  # documented: claim_idle + claim_interval


@pytest.fixture
def victim(servers: Servers, names: str, tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        env = dict(os.environ, REDIS_URL=servers.redis_url, MONGO_URL=servers.mongo_url, PYTHONUNBUFFERED="1")
        argv = [sys.executable, "-m", "tests.bus.proc", "consume", "--namespace", names, "--database", names]
        # handlers of 60 s under a 120 s timeout: far longer than claim_idle; the victim finishes none
        argv += ["--name", "victim", "--record", f"{names}:victim", "--sleep", "60", "--concurrency", "10"]
        argv += ["--handler-timeout", "120", "--claim-idle", str(KILL_CLAIM_IDLE)]
        with open(tmp_path / "victim.log", "ab") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.chaos
async def test_kill_9_of_a_consumer_with_long_handlers_resumes_within_claim_idle(
    make_bus: BusFactory, victim: Callable[[], subprocess.Popen[bytes]]
) -> None:
    """The victim (handler timeout 120 s, claim_idle 3 s) holds 10 entries of a burst of 40, renewing them;
    after kill -9 the survivor starts every one of them within claim_idle + claim_interval (3.3 s) of the
    kill — not after the handler timeout — and handles all 40."""
    producer = make_bus("auth")
    stream = producer.stream()
    redis = producer.rt.redis
    proc = victim()

    async def victim_reading() -> bool:
        try:
            return any(c["name"] == "victim" for c in await redis.xinfo_consumers(stream, "notification"))
        except Exception:
            return False

    await wait_until(victim_reading, timeout=30, message="victim reading")
    sent = [producer.event("user.registered", user(i), org_id="o1", subject=f"u{i}") for i in range(40)]
    await producer.publish_events(sent[:10])

    async def victim_holds_ten() -> bool:
        held = await redis.xpending_range(stream, "notification", "-", "+", 100, consumername="victim")
        return len(held) == 10

    await wait_until(victim_holds_ten, timeout=30, message="victim holding 10 entries")
    entries = await redis.xpending_range(stream, "notification", "-", "+", 100, consumername="victim")
    held_ids = {e["message_id"] for e in entries}
    started: dict[str, float] = {}
    survivor_bus = make_bus("notification")
    survivor = survivor_bus.consumer(
        "notification", name="survivor", claim_idle=KILL_CLAIM_IDLE, handler_timeout=120, stats_interval=3600.0
    )

    @survivor.on("user.registered")
    async def handle(event: Event) -> None:
        started.setdefault(event.entry_id, time.monotonic())

    async with running(survivor.run):
        await producer.publish_events(sent[10:])
        await wait_until(lambda: len(started) == 30, timeout=30, message="the survivor handles the rest")
        idles: list[int] = []

        async def renewed_three_times() -> bool:
            held = await redis.xpending_range(stream, "notification", "-", "+", 100, consumername="victim")
            if len(held) < 10:
                raise AssertionError("the living victim lost entries to the survivor")
            idles.append(min(int(p["time_since_delivered"]) for p in held))
            return sum(1 for x, y in itertools.pairwise(idles) if y < x) >= 3

        # three renewals (each claim_idle / 3 apart: together claim_idle) with the survivor reclaiming
        await wait_until(renewed_three_times, timeout=30, interval=0.05, message="the victim renews its entries")
        assert not held_ids & set(started)  # the living victim kept its entries
        proc.kill()
        proc.wait(10)
        await wait_until(
            lambda: held_ids <= set(started),
            timeout=BOUND_S,
            interval=0.05,
            message=f"the victim's entries started by the survivor within {BOUND_S}s",
        )
        await wait_until(lambda: _no_pending(producer, stream), timeout=10, message="all acknowledged")
    assert len(started) == 40


async def test_an_idle_entry_behind_live_consumers_work_is_reclaimed_with_one_free_slot(
    make_bus: BusFactory,
) -> None:
    """A dead consumer's entry sitting behind 30 entries live consumers hold (renewed) in the group's pending
    list is reclaimed by a consumer with a single free slot. ``XAUTOCLAIM`` from ``0-0`` with ``COUNT 1``
    looked at no more than 10 pending entries, so it never reached it."""
    producer = make_bus("auth")
    stream = producer.stream()
    bus = make_bus("notification")
    redis = producer.rt.redis
    await redis.xgroup_create(stream, "notification", id="0", mkstream=True)
    for i in range(31):
        await producer.publish("user.registered", user(i), org_id="o1", subject=f"u{i}")
    busy: Any = await redis.xreadgroup("notification", "busy", {stream: ">"}, count=30)  # decoded: [[stream, entries]]
    busy_ids = [entry_id for entry_id, _ in busy[0][1]]
    dead: Any = await redis.xreadgroup("notification", "dead", {stream: ">"}, count=1)
    [(dead_id, _)] = dead[0][1]

    async def busy_renews() -> None:  # a live consumer renewing the entries it holds
        while True:
            await redis.xclaim(stream, "notification", "busy", 0, busy_ids, justid=True)
            await asyncio.sleep(CLAIM_IDLE / 4)

    handled: list[str] = []
    c = consumer(bus, "a", concurrency=1)

    @c.on("user.registered")
    async def handle(event: Event) -> None:
        handled.append(event.entry_id)

    renewer = asyncio.create_task(busy_renews())
    try:
        async with running(c.run):
            await wait_until(lambda: dead_id in handled, timeout=15, message="the dead consumer's entry reclaimed")
        assert handled == [dead_id]  # the live consumer's entries stayed where they were
        assert reclaimed(bus, stream) == 1
    finally:
        renewer.cancel()


async def test_a_dead_consumers_entry_is_not_starved_by_a_backlog_of_new_entries(make_bus: BusFactory) -> None:
    """Under a steady load every slot that frees is refilled by the next read within a round trip, so a
    reclaim pass rarely finds a free slot: the reads hold back as many slots as idle entries wait
    (``reclaim_wanted``), and the dead consumer's entry is handled long before the backlog is drained."""
    producer = make_bus("auth")
    stream = producer.stream()
    bus = make_bus("notification")
    redis = producer.rt.redis
    await redis.xgroup_create(stream, "notification", id="0", mkstream=True)
    await producer.publish("user.registered", user(0), org_id="o1", subject="u0")
    dead: Any = await redis.xreadgroup("notification", "dead", {stream: ">"}, count=1)  # read, never renewed
    [(dead_id, _)] = dead[0][1]
    for i in range(1, 301):
        await producer.publish("user.registered", user(i), org_id="o1", subject=f"u{i}")

    handled: list[str] = []
    c = consumer(bus, "a", concurrency=2)

    @c.on("user.registered")
    async def handle(event: Event) -> None:
        await asyncio.sleep(0.02)  # 300 entries x 20 ms / 2 slots: ~3 s of backlog, claim_idle 0.9 s
        handled.append(event.entry_id)

    async with running(c.run):
        await wait_until(lambda: dead_id in handled, timeout=20, message="the dead consumer's entry reclaimed")
        assert handled.index(dead_id) < 200  # within ~claim_idle + a pass, not after the backlog
        await wait_until(lambda: len(handled) == 301, timeout=30, message="everything handled")
    assert reclaimed(bus, stream) == 1
