"""Sentinel fail-over under load: a real primary, replica and three Sentinels; ``kill -9`` the primary while the
outbox relay publishes and a consumer group consumes.

With ``OUTBOX_REPLICA_ACKS=1`` no event the outbox let go may be missing after the fail-over; with it off the
number lost is measured and printed (run with ``-s`` to see the figures), not asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from cryptography.fernet import Fernet

from novapulse_devkit.servers import SentinelGroup
from novapulse_devkit.testing import ServiceProcess, wait_until
from novapulse_runtime.bus import Event, EventBus
from novapulse_runtime.bus.constants import OUTBOX_COLLECTION
from novapulse_runtime.bus.publisher import NotReplicated
from novapulse_runtime.catalog.auth import UserRegistered
from novapulse_runtime.redisconn import parse_cluster_url
from novapulse_runtime.revocation import RevocationList, publish_revocations
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings
from tests.bus.conftest import running

pytestmark = pytest.mark.integration


@pytest.fixture
async def runtimes(mongo_url: str, names: str) -> AsyncIterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(service: str, redis_url: str, **settings: Any) -> Runtime:
        rt = Runtime(
            ServiceSettings(
                service_name=service,
                redis_url=redis_url,
                mongo_url=mongo_url,
                mongo_db=f"{names}_{service}"[:60],
                **settings,
            ),
            role="worker",
        )
        made.append(rt)
        return rt

    yield make
    for rt in made:
        with contextlib.suppress(Exception):
            await rt.close()
    made.clear()
    gc.collect()  # what a fail-over left to the collector is reported inside this test (see the filter below)


def _role_changed(n: int) -> dict[str, str]:
    return {"user_id": f"u{n % 7}", "org_id": "o1", "role": "admin", "changed_by": str(n)}


async def test_unconfirmed_batch_stays_in_the_outbox(
    runtimes: Callable[..., Runtime], redis_url: str, names: str
) -> None:
    """A lone Redis has no replica: WAIT 1 answers 0, so the relay keeps the records, warns and counts it."""
    if parse_cluster_url(redis_url) is not None:
        pytest.skip("OUTBOX_REPLICA_ACKS is refused with a Redis Cluster URL")
    rt = runtimes("auth", redis_url, outbox_replica_acks=1, outbox_replica_timeout_ms=50)
    outbox = EventBus(rt, namespace=names).outbox()
    await outbox.add("user.role_changed", _role_changed(1), org_id="o1", subject="u1")
    with pytest.raises(NotReplicated) as caught:
        await outbox.relay_once()
    assert (caught.value.acked, caught.value.wanted, len(caught.value.ids)) == (0, 1, 1)
    assert await rt.db[OUTBOX_COLLECTION].count_documents({}) == 1
    assert rt.metrics.registry.get_sample_value("novapulse_outbox_unreplicated_total") == 1.0


@pytest.mark.chaos
# Known, not fixed: after the kill, redis-py (8.1) sometimes lets a socket of a connection interrupted during
# the fail-over be closed by the garbage collector (ResourceWarning: unclosed StreamWriter / Connection)
# instead of closing it itself; tracked in docs/operations.md (Sentinel). Every other warning stays an error.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("acks", [1, 0], ids=["wait-on", "wait-off"])
async def test_primary_killed_under_load(
    acks: int, sentinel_group: SentinelGroup, runtimes: Callable[..., Runtime], names: str
) -> None:
    producer_rt = runtimes("auth", sentinel_group.url, outbox_replica_acks=acks, outbox_replica_timeout_ms=500)
    consumer_rt = runtimes("notification", sentinel_group.url)
    bus = EventBus(producer_rt, namespace=names)
    outbox = bus.outbox()
    consumer = EventBus(consumer_rt, namespace=names).consumer("notification", sources=["auth"])
    added: dict[str, float] = {}  # event id → when the outbox took it (monotonic seconds)
    handled: dict[str, float] = {}  # event id → first time the consumer handled it
    deliveries = 0

    @consumer.on("user.role_changed")
    async def handle(event: Event) -> None:
        nonlocal deliveries
        deliveries += 1
        handled.setdefault(event.id, time.monotonic())

    stop_load = asyncio.Event()

    async def load() -> None:  # steady load: one event every ~3 ms through the outbox
        n = 0
        while not stop_load.is_set():
            event = await outbox.add("user.role_changed", _role_changed(n), org_id="o1", subject=f"u{n % 7}")
            added[event.id] = time.monotonic()
            n += 1
            await asyncio.sleep(0.003)

    old_primary = sentinel_group.primary.port
    async with running(outbox.relay, consumer.run):
        producer = asyncio.create_task(load())
        await wait_until(lambda: len(handled) >= 300, timeout=30, message="300 events handled before the kill")
        in_flight = await producer_rt.db[OUTBOX_COLLECTION].count_documents({})
        sentinel_group.primary.kill()
        killed = time.monotonic()

        async def promoted() -> bool:
            found = await asyncio.to_thread(sentinel_group.master_address)
            return found is not None and found[1] != old_primary

        await wait_until(promoted, timeout=30, interval=0.05, message="Sentinel to promote the replica")
        promoted_after = time.monotonic() - killed
        # the old primary comes back as the new primary's replica (as an orchestrator's start script does),
        # so WAIT 1 can be answered again
        await asyncio.to_thread(sentinel_group.restart_as_replica, sentinel_group.primary)

        def resumed() -> bool:
            return any(added.get(i, 0) > killed for i in handled)

        await wait_until(resumed, timeout=60, interval=0.01, message="the consumer to handle a new event")
        resumed_after = min(t for i, t in handled.items() if added.get(i, 0) > killed) - killed
        await wait_until(lambda: sum(1 for i in added if added[i] > killed) >= 200, timeout=30, message="load")
        stop_load.set()
        await producer

        async def drained() -> bool:
            return await producer_rt.db[OUTBOX_COLLECTION].count_documents({}) == 0

        await wait_until(drained, timeout=30, message="the outbox to drain")
        entries: list[Any] = await consumer_rt.redis.xrange(bus.stream()) or []
        stream_ids = {fields["id"] for _, fields in entries}

        await wait_until(lambda: stream_ids <= set(handled), timeout=30, message="every stream entry handled")
    # every record left the outbox, so the relay marked all of them published: missing ones are lost
    lost = set(added) - stream_ids
    master = sentinel_group.master_address()
    unconfirmed = producer_rt.metrics.registry.get_sample_value("novapulse_outbox_unreplicated_total") or 0.0
    print(
        f"\nsentinel-failover acks={acks}: events={len(added)} lost={len(lost)} in_outbox_at_kill={in_flight}"
        f" promoted_s={promoted_after:.2f} consumers_resumed_s={resumed_after:.2f}"
        f" duplicate_deliveries={deliveries - len(handled)} unconfirmed_batches={unconfirmed:.0f}"
    )
    assert master is not None
    assert master[1] == sentinel_group.replica.port  # the consumer kept up against the promoted replica
    assert set(handled) == stream_ids  # no consumer stayed on the old primary: it handled everything there is
    if acks:
        assert lost == set()


@pytest.mark.chaos
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # a previous fail-over's leftovers
async def test_cost_of_waiting_for_a_replica(
    sentinel_group: SentinelGroup, runtimes: Callable[..., Runtime], names: str
) -> None:
    """Publish latency of one relay batch (XADD pipeline, then WAIT 1 or not) on loopback, both in one run,
    alternating, medians of 200 batches each of 1 and of 100 entries. Prints the figures; asserts only that
    each WAIT was answered by the replica."""
    rt = runtimes("auth", sentinel_group.url)
    bus = EventBus(rt, namespace=names, tracing=False)
    stream = bus.stream()
    figures: dict[tuple[int, int], list[float]] = {}
    for size in (1, 100):
        events = [bus.event("user.role_changed", _role_changed(n)) for n in range(size)]
        entries = [
            (e.type, f) for e, f in zip(events, bus.publisher.fields_for_many(events, stream, "send"), strict=True)
        ]
        await bus.publisher.add_entries(stream, entries, replicas=1)  # warm both paths' connection
        for _ in range(200):
            for acks in (0, 1):
                started = time.perf_counter()
                await bus.publisher.add_entries(stream, entries, replicas=acks, replica_timeout_ms=1000)
                figures.setdefault((size, acks), []).append(time.perf_counter() - started)
    lines = []
    for size in (1, 100):
        off = statistics.median(figures[(size, 0)])
        on = statistics.median(figures[(size, 1)])
        lines.append(
            f"batch={size}: off {off * 1000:.3f} ms ({size / off:,.0f} events/s)"
            f" on {on * 1000:.3f} ms ({size / on:,.0f} events/s) ratio on/off={on / off:.2f}"
        )
    print("\nreplica-ack cost (median of 200, loopback): " + "; ".join(lines))


@pytest.mark.chaos
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # as above
async def test_pubsub_follows_the_failover(
    sentinel_group: SentinelGroup, runtimes: Callable[..., Runtime], names: str
) -> None:
    """A subscriber (the revocation list every verifier keeps) re-subscribes on the promoted replica: a
    revocation pushed after the fail-over reaches its local copy."""
    subscriber = runtimes("webhook", sentinel_group.url)
    publisher = runtimes("auth", sentinel_group.url)
    revocations = RevocationList(subscriber.redis, names)
    try:
        assert not await revocations.is_revoked("before")  # starts the subscription
        await wait_until(lambda: revocations.synced, timeout=10, message="subscribed")
        old_primary = sentinel_group.primary.port
        sentinel_group.primary.kill()

        async def promoted() -> bool:
            found = await asyncio.to_thread(sentinel_group.master_address)
            return found is not None and found[1] != old_primary

        await wait_until(promoted, timeout=30, interval=0.05, message="Sentinel to promote the replica")
        await wait_until(lambda: revocations.synced, timeout=30, message="re-subscribed on the new primary")
        expiry = time.time() + 600
        await publish_revocations(publisher.redis, names, {"after": expiry})

        async def pushed() -> bool:
            return revocations.synced and await revocations.is_revoked("after")  # local copy: pushed to it

        await wait_until(pushed, timeout=15, message="the revocation pushed through the new primary")
    finally:
        await revocations.close()


async def _relay_problem(outbox: Any) -> str:
    try:
        return f"relay_once published {await outbox.relay_once()}"
    except Exception as exc:
        return repr(exc)


async def _consumed(url: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/v1/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("novapulse_events_consumed_total{") and 'type="user.registered"' in line
    )


@pytest.mark.e2e
@pytest.mark.chaos
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # as above
async def test_a_service_worker_process_survives_the_failover(
    sentinel_group: SentinelGroup, runtimes: Callable[..., Runtime], spawn: Callable[..., ServiceProcess], names: str
) -> None:
    """The webhook service's real worker process (``python -m novapulse_webhook worker``) on the Sentinel URL
    keeps consuming through a ``kill -9`` of the primary, without a restart."""
    env = {
        "REDIS_URL": sentinel_group.url,
        "WEBHOOK_SECRET_KEYS": Fernet.generate_key().decode(),
        "EVENTS_NAMESPACE": names,
        "RATE_LIMIT_ENABLED": "false",
    }
    worker = spawn("novapulse_webhook", "worker", env=env)
    producer_rt = runtimes("auth", sentinel_group.url, outbox_replica_acks=1)
    outbox = EventBus(producer_rt, namespace=names).outbox()

    async def add(start: int, count: int) -> None:
        for n in range(start, start + count):
            data = UserRegistered(
                user_id=f"u{n}", org_id="o1", email=f"u{n}@example.com", name="U", role="owner", organization="A"
            )
            await outbox.add("user.registered", data, org_id="o1", subject=f"u{n}")

    async with running(outbox.relay):
        await add(0, 50)

        async def first_half() -> bool:
            return await _consumed(worker.url) >= 50

        await wait_until(first_half, timeout=30, message=f"50 events consumed; log:\n{worker.logs()}")
        old_primary = sentinel_group.primary.port
        sentinel_group.primary.kill()
        killed = time.monotonic()
        await add(50, 50)  # written while the primary is gone: the relay publishes them after the fail-over

        async def promoted() -> bool:
            found = await asyncio.to_thread(sentinel_group.master_address)
            return found is not None and found[1] != old_primary

        await wait_until(promoted, timeout=30, interval=0.05, message="Sentinel to promote the replica")
        await asyncio.to_thread(sentinel_group.restart_as_replica, sentinel_group.primary)

        async def all_consumed() -> bool:
            return await _consumed(worker.url) >= 100

        try:
            await wait_until(all_consumed, timeout=60, interval=0.1, message="100 consumed")
        except AssertionError:
            stream = EventBus(producer_rt, namespace=names).stream()
            state = (
                await _consumed(worker.url),
                await producer_rt.db[OUTBOX_COLLECTION].count_documents({}),
                await producer_rt.redis.xlen(stream),
                await producer_rt.redis.xinfo_groups(stream),
                sentinel_group.master_address(),
                await _relay_problem(outbox),
            )
            raise AssertionError(f"consumed, outbox, stream, groups, master: {state}\n{worker.logs()}") from None
        print(f"\nworker process consumed every event again {time.monotonic() - killed:.2f} s after the kill")
    assert worker.proc is not None
    assert worker.proc.poll() is None, worker.logs()
    async with aiohttp.ClientSession() as http, http.get(f"{worker.url}/api/v1/health/ready") as resp:
        assert resp.status == 200
