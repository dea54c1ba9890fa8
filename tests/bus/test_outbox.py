"""The transactional outbox: per-aggregate order, nothing lost when the producer crashes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from novapulse_devkit.queryplans import QueryRecorder, assert_no_scans
from novapulse_devkit.testing import Servers, wait_until
from novapulse_runtime.bus import Event, EventBus
from novapulse_runtime.bus.constants import OUTBOX_COLLECTION
from novapulse_runtime.redisconn import is_cluster
from tests.bus.conftest import running

pytestmark = pytest.mark.integration

BusFactory = Callable[..., EventBus]


async def test_relay_publishes_in_order_per_aggregate(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    outbox = bus.outbox()
    consumer = bus.consumer("audit", concurrency=1)
    got: list[tuple[str, int]] = []

    @consumer.on("user.role_changed")
    async def handle(event: Event) -> None:
        got.append((event.subject or "", int(event.data.changed_by)))

    aggregates = ["a", "b", "c"]
    async with running(outbox.relay, consumer.run):
        for n in range(30):
            for agg in aggregates:
                data = {"user_id": agg, "org_id": "o1", "role": "admin", "changed_by": str(n)}
                if n % 3 == 0:
                    async with outbox.transaction() as session:
                        assert session is None or session.in_transaction
                        await outbox.add("user.role_changed", data, org_id="o1", subject=agg, session=session)
                elif n % 3 == 1:
                    await outbox.add("user.role_changed", data, org_id="o1", subject=agg)
                else:
                    await outbox.add_many([bus.event("user.role_changed", data, org_id="o1", subject=agg)])
        await wait_until(lambda: len(got) == 90, timeout=30, message="90 events handled")
    for agg in aggregates:
        assert [n for a, n in got if a == agg] == list(range(30))
    entries: list[Any] = await bus.rt.redis.xrange(bus.stream()) or []
    for agg in aggregates:
        in_stream = [e[1]["data"] for e in entries if e[1].get("subject") == agg]
        assert [int(d.split('"changed_by":"')[1].split('"')[0]) for d in in_stream] == list(range(30))
    assert await bus.rt.db[OUTBOX_COLLECTION].count_documents({}) == 0


async def _set_calls(bus: EventBus, key: str) -> int:
    """``SET`` calls served so far by the server holding ``key`` (on a cluster: the node of its slot)."""
    redis: Any = bus.rt.redis
    options = {"target_nodes": redis.get_node_from_key(key)} if is_cluster(redis) else {}
    stats: dict[str, Any] = await redis.info("commandstats", **options)
    return int(stats.get("cmdstat_set", {}).get("calls", 0))


async def test_a_stand_by_relay_woken_by_writes_does_not_spin_on_the_lease(make_bus: BusFactory) -> None:
    """Two workers of one service: one relay holds the lease, the other stands by. Every write wakes both;
    the stand-by must go back to waiting, not retry the lease in a loop (each retry is a Redis SET NX)."""
    bus = make_bus("auth")
    holder, standby = bus.outbox(), make_bus("auth").outbox()  # two processes' buses: one lease, one channel
    assert holder.lock_key == standby.lock_key
    async with running(holder.relay):
        await wait_until(lambda: _exists(bus, holder.lock_key), timeout=10, message="the first relay holds the lease")
        async with running(standby.relay):
            await wait_until(lambda: _subscribers(bus, standby.wake_channel, 2), timeout=10, message="both listen")
            for n in range(20):
                data = {"user_id": "a", "org_id": "o1", "role": "admin", "changed_by": str(n)}
                await holder.add("user.role_changed", data, org_id="o1", subject="a")
            await wait_until(lambda: _outbox_empty(bus), timeout=30, message="every record relayed by the lease holder")
            before = await _set_calls(bus, holder.lock_key)
            await asyncio.sleep(1.0)  # a window to count lease attempts in, not a wait for something
            attempts = await _set_calls(bus, holder.lock_key) - before
    # the stand-by tries once per lock_ttl / 2 (2.5 s), the holder renews with a script: at most a few SETs
    assert attempts <= 3, f"{attempts} SET calls in 1 s: the stand-by relay spins on the lease"


async def _exists(bus: EventBus, key: str) -> bool:
    return bool(await bus.rt.redis.exists(key))


async def _subscribers(bus: EventBus, channel: str, count: int) -> bool:
    """At least ``count`` subscribers to ``channel`` (on a cluster: summed over every node)."""
    redis: Any = bus.rt.redis
    if not is_cluster(redis):
        found = await redis.pubsub_numsub(channel)
        return bool(found) and int(found[0][1]) >= count
    total = 0
    for node in redis.get_nodes():
        total += sum(int(n) for _, n in await redis.execute_command("PUBSUB NUMSUB", channel, target_nodes=node))
    return total >= count


async def _outbox_empty(bus: EventBus) -> bool:
    return await bus.rt.db[OUTBOX_COLLECTION].count_documents({}) == 0


@pytest.mark.chaos
@pytest.mark.parametrize("crash", ["before_publish", "after_publish_before_delete"])
async def test_a_producer_crash_between_state_write_and_publish_loses_nothing(
    crash: str, make_bus: BusFactory, servers: Servers, names: str, tmp_path: Path
) -> None:
    bus = make_bus("auth")
    database = bus.rt.db.name
    env = dict(os.environ, REDIS_URL=servers.redis_url, MONGO_URL=servers.mongo_url)
    argv = [sys.executable, "-m", "tests.bus.proc", "produce", "--namespace", names, "--database", database]
    argv += ["--count", "40"] + (["--relay"] if crash == "after_publish_before_delete" else [])
    proc = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    assert proc.returncode == -9, proc.stderr.decode()
    assert b"written" in proc.stdout
    assert await bus.rt.db["users"].count_documents({}) == 40
    assert await bus.rt.db[OUTBOX_COLLECTION].count_documents({}) == 40
    published_before = int(await bus.rt.redis.xlen(bus.stream())) if await bus.rt.redis.exists(bus.stream()) else 0
    assert published_before == (40 if crash == "after_publish_before_delete" else 0)

    calls: Counter[str] = Counter()
    consumer = bus.consumer("notification")

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        calls[event.subject or ""] += 1

    async with running(bus.outbox().relay, consumer.run):
        await wait_until(lambda: len(calls) == 40, timeout=30, message="all 40 users' events handled")

        async def drained() -> bool:
            return await bus.rt.db[OUTBOX_COLLECTION].count_documents({}) == 0

        await wait_until(drained, timeout=15, message="outbox drained")
    assert set(calls) == {f"u{i}" for i in range(40)}
    assert set(calls.values()) == {1}  # the republished copies were deduplicated


async def test_transaction_path_commits_state_and_outbox_together(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    outbox = bus.outbox()
    outbox._transactions = True  # the MongoDB-wire test server accepts transactions (without isolation)
    users = bus.rt.db["users"]
    async with outbox.transaction() as session:
        assert session is not None
        assert session.in_transaction
        await users.insert_one({"_id": "u1"}, session=session)
        event = await outbox.add(
            "user.disabled", {"user_id": "u1", "org_id": "o1", "disabled_by": "u0"}, session=session
        )
    assert await users.count_documents({}) == 1
    assert await bus.rt.db[OUTBOX_COLLECTION].count_documents({"_id": event.id}) == 1
    assert await outbox.relay_once() == 1
    entries: list[Any] = await bus.rt.redis.xrange(bus.stream()) or []
    assert [e[1]["id"] for e in entries] == [event.id]


async def test_the_backlog_counts_are_served_by_an_index(make_bus: BusFactory, servers: Servers) -> None:
    """The relay's backlog gauge and ``Outbox.backlog`` count with the ``count`` command the records from the
    oldest on (the ``_id`` index): ``count_documents`` is an aggregate with ``$group`` that nx-27017 answers by
    reading the whole outbox (issue 15) — a backlog of 100k records made every relay round read them all.
    Fails on the old shape."""
    bus = make_bus("auth")
    outbox = bus.outbox()
    outbox.batch = 2  # a full batch, so the relay counts every record from the oldest on
    for n in range(3):
        data = {"user_id": "a", "org_id": "o1", "role": "admin", "changed_by": str(n)}
        await outbox.add("user.role_changed", data, org_id="o1", subject="a")
    recorder = QueryRecorder()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        servers.mongo_url, tz_aware=True, event_listeners=[recorder]
    )
    try:
        db = client[bus.rt.db.name]
        outbox.collection = db[OUTBOX_COLLECTION]
        assert (await outbox.backlog())[0] == 3
        assert await outbox.relay_once() == 2
        assert "aggregate" not in {q.op for q in recorder.queries}  # no count_documents
        counts = [q for q in recorder.queries if q.op == "count"]
        assert len(counts) == 2
        assert all(list(q.filter) == ["_id"] for q in counts)  # from the oldest record on
        await assert_no_scans(db, counts)
    finally:
        await client.close()
