"""The bus on a real 3-primary Redis Cluster (``redis+cluster://``): publish and consume over several source
streams (each its own slot), idempotency, retries → dead letter → replay, reclaim of a dead consumer's
entries, the outbox relay's lock and cross-process wake-up, the rate limiter, the revocation push and the
webhook endpoint slots. Every test here overrides ``redis_url`` with the session's cluster."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from novapulse_devkit.testing import wait_until
from novapulse_runtime.bus import Event, EventBus
from novapulse_runtime.bus.constants import OUTBOX_COLLECTION
from novapulse_runtime.constants import CONFIG_ERROR_EXIT
from novapulse_runtime.metrics import Metrics
from novapulse_runtime.ratelimit import RateLimit, RateLimiter
from novapulse_runtime.redisconn import RedisUrlError, connect_redis, parse_cluster_url, slot_groups
from novapulse_runtime.revocation import RevocationList, publish_revocations
from novapulse_runtime.settings import ServiceSettings, load_settings
from novapulse_webhook.slots import EndpointSlots
from tests.bus.conftest import RuntimeFactory, running, user

pytestmark = pytest.mark.integration

BusFactory = Callable[..., EventBus]


@pytest.fixture(scope="module")
def redis_url(redis_cluster_url: str) -> str:
    return redis_cluster_url


@pytest.fixture
async def cluster(redis_url: str) -> AsyncIterator[RedisCluster]:
    client = connect_redis(redis_url, socket_timeout=5.0)
    assert isinstance(client, RedisCluster)
    yield client
    await client.aclose()


def slot(key: str) -> int:
    return key_slot(key.encode())


# --- the URL ------------------------------------------------------------------------------------------------


def test_cluster_urls_parse_and_bad_ones_name_redis_url() -> None:
    parsed = parse_cluster_url("rediss+cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2:7001/0")
    assert parsed is not None
    assert (parsed.nodes, parsed.username, parsed.password, parsed.tls) == (
        (("10.0.0.1", 7000), ("10.0.0.2", 7001)),
        "app",
        "p@ss",
        True,
    )
    assert parse_cluster_url("redis+cluster://[::1]:7000").nodes == (("::1", 7000),)  # type: ignore[union-attr]
    assert parse_cluster_url("redis://localhost:6379/0") is None
    for bad in (
        "redis+cluster://",
        "redis+cluster://host",
        "redis+cluster://host:notaport",
        "redis+cluster://host:7000/3",
        "redis+cluster://host:7000?ssl=1",
    ):
        with pytest.raises(RedisUrlError, match=r"^REDIS_URL: "):
            parse_cluster_url(bad)
    with pytest.raises(ValueError, match="database 0 only"):
        ServiceSettings(redis_url="redis+cluster://h:7000/2", mongo_url="mongodb://h")


def test_a_bad_cluster_url_stops_start_up_with_one_line_naming_redis_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis+cluster://10.0.0.1:7000,10.0.0.2")
    monkeypatch.setenv("MONGO_URL", "mongodb://127.0.0.1:27017")
    with pytest.raises(SystemExit) as exited:
        load_settings(ServiceSettings)
    assert exited.value.code == CONFIG_ERROR_EXIT
    assert (
        capsys.readouterr().err
        == "configuration error: REDIS_URL: Value error, cluster node '10.0.0.2' is not host:port\n"
    )


def test_the_runtime_builds_a_cluster_client_with_the_usual_timeouts(redis_url: str) -> None:
    client = connect_redis(redis_url, socket_timeout=5.0)
    assert isinstance(client, RedisCluster)
    kwargs = client.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"], kwargs["decode_responses"]) == (5.0, 2.0, True)


# --- the bus --------------------------------------------------------------------------------------------------


async def test_events_from_two_source_streams_are_consumed_once_each(make_bus: BusFactory) -> None:
    auth = make_bus("auth")
    webhook = make_bus("webhook", rt=None)
    consumer = auth.consumer("notification", concurrency=8)
    seen: Counter[str] = Counter()

    @consumer.on("user.registered")
    async def registered(event: Event) -> None:
        seen[event.id] += 1

    @consumer.on("webhook.test")
    async def tested(event: Event) -> None:
        seen[event.id] += 1

    streams = consumer.streams()
    assert len({slot(s) for s in streams}) == len(streams) == 3  # auth, webhook, replay: three slots
    assert len(slot_groups(auth.rt.redis, streams)) == 3
    async with running(consumer.run):
        sent = [await auth.publish("user.registered", user(i), org_id="o1", subject=f"u{i}") for i in range(15)]
        sent += [await webhook.publish("webhook.test", {"endpoint_id": f"e{i}"}, org_id="o1") for i in range(15)]
        await wait_until(lambda: len(seen) == 30, timeout=20, message="30 events from two streams handled")

        async def acked() -> bool:
            pending = [await auth.rt.redis.xpending(s, "notification") for s in streams[:2]]
            return all(int(p["pending"]) == 0 for p in pending)

        await wait_until(acked, timeout=20, message="every entry acknowledged")
    assert set(seen) == {e.id for e in sent}
    assert set(seen.values()) == {1}


async def test_duplicates_are_skipped_by_the_group_keys_in_one_slot(
    make_bus: BusFactory, make_runtime: RuntimeFactory
) -> None:
    bus = make_bus("auth")
    other = make_bus("auth", rt=make_runtime("auth"))
    calls: Counter[str] = Counter()

    async def handle(event: Event) -> None:
        calls[event.id] += 1

    consumers = []
    for b, name in ((bus, "a"), (other, "b")):
        c = b.consumer("notification", name=name, concurrency=8)
        c.add_handler("user.registered", handle)
        consumers.append(c)
    events = [bus.event("user.registered", user(i), org_id="o1", subject=f"u{i}") for i in range(30)]
    keys = [bus.keys.seen("notification", e.id) for e in events]
    assert len({slot(k) for k in keys}) == 1  # the hash tag: one script claims the whole batch
    async with running(*(c.run for c in consumers)):
        for _ in range(3):
            await bus.publish_events(events)
        await wait_until(lambda: len(calls) == 30, timeout=20, message="30 distinct events handled")
        stream = bus.keys.stream("auth")

        async def all_acked() -> bool:
            return int((await bus.rt.redis.xpending(stream, "notification"))["pending"]) == 0

        def duplicates() -> float:
            return float(sum(c.metrics.duplicates.labels(stream, "notification")._value.get() for c in consumers))

        # every copy read (lag 0) and acknowledged: 60 skipped as duplicates
        await wait_until(lambda: duplicates() >= 60, timeout=20, message="60 copies skipped")
        await wait_until(all_acked, timeout=20, message="all 90 entries acknowledged")
    assert set(calls.values()) == {1}
    assert duplicates() == 60
    assert {await bus.rt.redis.get(k) for k in keys} == {"done"}


async def test_retries_then_dead_letter_then_replay(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("notification", max_deliveries=3, backoff_base=0.05, backoff_max=0.2)
    calls: Counter[str] = Counter()
    handled: set[str] = set()
    broken = {"u3"}

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        calls[event.subject or ""] += 1
        if event.subject in broken:
            raise RuntimeError(f"cannot handle {event.subject}")
        handled.add(event.subject or "")

    dead = bus.keys.dead("notification")
    async with running(consumer.run):
        for i in range(6):
            await bus.publish("user.registered", user(i), org_id="o1", subject=f"u{i}")
        await wait_until(lambda: len(handled) == 5, timeout=20, message="5 good events handled")

        async def one_dead() -> bool:
            return int(await bus.rt.redis.xlen(dead)) == 1

        await wait_until(one_dead, timeout=20, message="one dead letter")
        assert calls["u3"] == 3
        [letter] = (await bus.operations.dead_letters("notification")).items
        assert (letter.reason, letter.deliveries) == ("handler_failed", 3)
        broken.clear()
        assert slot(dead) != slot(bus.keys.replay("notification"))  # the move crosses slots
        [new_id] = await bus.operations.replay_all("notification")
        assert new_id
        await wait_until(lambda: "u3" in handled, timeout=20, message="the replayed event handled")
    assert calls["u3"] == 4
    assert int(await bus.rt.redis.xlen(dead)) == 0


async def test_a_dead_consumers_entries_are_reclaimed(make_bus: BusFactory, cluster: RedisCluster) -> None:
    bus = make_bus("auth")
    stream = bus.keys.stream("auth")
    await cluster.xgroup_create(stream, "notification", id="0", mkstream=True)
    sent = [await bus.publish("user.registered", user(i), org_id="o1", subject=f"u{i}") for i in range(4)]
    taken: Any = await cluster.xreadgroup("notification", "dead-consumer", {stream: ">"}, count=10)
    assert len(taken[0][1]) == 4  # read by a consumer that then died: pending in its name
    consumer = bus.consumer("notification", claim_idle=0.5, handler_timeout=1.0)
    handled: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        handled.append(event.id)

    async with running(consumer.run):
        await wait_until(lambda: len(handled) == 4, timeout=20, message="the dead consumer's 4 events")

        async def none_pending() -> bool:
            return int((await cluster.xpending(stream, "notification"))["pending"]) == 0

        await wait_until(none_pending, timeout=20, message="reclaimed entries acknowledged")
    assert sorted(handled) == sorted(e.id for e in sent)
    assert consumer.metrics.reclaimed.labels(stream, "notification")._value.get() == 4


async def _subscribers(cluster: RedisCluster, channel: str) -> int:
    total = 0
    for node in cluster.get_nodes():
        reply = await cluster.execute_command("PUBSUB NUMSUB", channel, target_nodes=node)
        total += sum(int(n) for _, n in reply)
    return total


async def test_outbox_relay_holds_its_lock_and_wakes_on_another_process_write(
    make_bus: BusFactory, make_runtime: RuntimeFactory, cluster: RedisCluster
) -> None:
    relaying = make_bus("auth")
    standby = make_bus("auth", rt=make_runtime("auth"))
    writer = make_bus("auth", rt=make_runtime("auth")).outbox()
    outbox, second = relaying.outbox(), standby.outbox()
    outbox.sweep_interval = second.sweep_interval = 3600.0  # only the pub/sub wake-up can start a relay pass
    consumer = relaying.consumer("notification", concurrency=4)
    got: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        got.append(event.subject or "")

    async with running(outbox.relay, second.relay, consumer.run):

        async def locked() -> bool:
            return await cluster.get(outbox.lock_key) is not None

        await wait_until(locked, timeout=20, message="one relay holds the lock")

        async def listening() -> bool:
            return await _subscribers(cluster, outbox.wake_channel) == 2

        await wait_until(listening, timeout=20, message="both relays listen for wake-ups")
        for i in range(5):
            await writer.add("user.registered", user(i), org_id="o1", subject=f"u{i}")  # another process's write
        await wait_until(lambda: len(got) == 5, timeout=20, message="5 events relayed after the wake-ups")
        holder = await cluster.get(outbox.lock_key)
        assert holder in {outbox._token, second._token}
    assert got == [f"u{i}" for i in range(5)]
    assert await relaying.rt.db[OUTBOX_COLLECTION].count_documents({}) == 0


async def test_rate_limiter_counts_on_the_cluster(cluster: RedisCluster, names: str) -> None:
    limiter = RateLimiter(cluster, Metrics("auth", "api"), f"{names}-auth")  # type: ignore[arg-type]
    limit = RateLimit(f"{names}-login", 3, 60.0)
    decisions = [await limiter.hit(limit, "10.0.0.1") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert (await limiter.hit(limit, "10.0.0.2")).allowed  # another bucket, likely another slot


async def test_a_revocation_reaches_a_subscribed_verifier(cluster: RedisCluster, names: str) -> None:
    verifier = RevocationList(cluster, names, ping_interval=0.2)  # type: ignore[arg-type]
    try:
        assert not await verifier.is_revoked("sid-1")
        await wait_until(lambda: verifier.synced, timeout=20, message="the subscription is up")
        await publish_revocations(cluster, names, {"sid-1": time.time() + 600})  # type: ignore[arg-type]
        await wait_until(lambda: verifier._revoked.get("sid-1") is not None, timeout=20, message="the push")
        assert await verifier.is_revoked("sid-1")
        assert await cluster.zscore(f"{names}:auth:revoked-sessions", "sid-1") is not None
    finally:
        await verifier.close()


async def test_webhook_endpoint_slots_renew_across_slots(cluster: RedisCluster, names: str) -> None:
    slots = EndpointSlots(cluster, names, ttl=30.0)
    held = [(f"ep{i}", f"tok{i}{j}") for i in range(6) for j in range(2)]
    for endpoint, token in held:
        assert await slots.try_acquire(endpoint, token, limit=2)
    assert not await slots.try_acquire("ep0", "tok-third", limit=2)
    assert len({slot(slots.key(e)) for e, _ in held}) > 1
    for endpoint, _ in held:
        await cluster.pexpire(slots.key(endpoint), 1000)  # as if the lease had nearly run out
    await slots.renew(held)
    assert min([await cluster.pttl(slots.key(e)) for e, _ in held]) > 1000
    scores: list[Any] = await cluster.zrange(slots.key("ep5"), 0, -1)
    assert sorted(scores) == ["tok50", "tok51"]
