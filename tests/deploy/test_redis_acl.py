"""The shipped Redis users (deploy/redis/users.acl.template, rendered by deploy/redis/entrypoint.sh) on a
real redis-server: each service writes only its own stream and keys, consumes every stream with its own
group, and the whole bus (outbox relay, publish, consume, dead letters, idempotency, rate limits) works as
that user."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from novapulse_devkit.servers import free_port, stop_process, wait_for_port
from novapulse_devkit.testing import wait_until
from novapulse_runtime.bus import Event, EventBus
from novapulse_runtime.catalog.auth import UserRegistered
from novapulse_runtime.metrics import Metrics
from novapulse_runtime.ratelimit import RateLimit, RateLimiter
from novapulse_runtime.revocation import RevocationList, channel_name, publish_revocations, set_key
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings
from novapulse_webhook.slots import EndpointSlots
from novapulse_webhook.versions import EndpointVersions
from tests.bus.conftest import running

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "redis" / "entrypoint.sh"
USERS = ("admin", "auth", "webhook", "notification", "workflow", "report", "console")


def password(user: str) -> str:
    return f"test-{user}-password"


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test started by the shipped entrypoint with the shipped users; its port."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    tmp = tmp_path
    port = free_port()
    env = dict(os.environ, ACL_FILE=str(tmp / "users.acl"))
    env.update({f"REDIS_PASSWORD_{u.upper()}": password(u) for u in USERS})
    argv = ["sh", str(ENTRYPOINT), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with open(tmp / "redis.log", "ab") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    problem = wait_for_port(proc, port, 15)
    assert problem is None, f"redis-server {problem}: {(tmp / 'redis.log').read_text()}"
    yield port
    stop_process(proc)


def url(port: int, user: str) -> str:
    return f"redis://{user}:{password(user)}@127.0.0.1:{port}/0"


@pytest.fixture
async def client(acl_redis: int) -> Any:
    made: list[Redis] = []

    def make(user: str) -> Redis:
        c = Redis.from_url(url(acl_redis, user), decode_responses=True)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.aclose()


@pytest.fixture
async def runtime_as(acl_redis: int, mongo_url: str, names: str) -> Any:
    made: list[Runtime] = []

    def make(service: str) -> Runtime:
        settings = ServiceSettings(
            service_name=service,
            redis_url=url(acl_redis, service),
            mongo_url=mongo_url,
            mongo_db=f"{names}_{service}"[:60],
        )
        rt = Runtime(settings, role="worker")
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.close()


def user(i: int) -> UserRegistered:
    return UserRegistered(
        user_id=f"u{i}", org_id="o1", email=f"u{i}@example.com", name="U", role="owner", organization="A"
    )


async def test_a_service_writes_its_own_stream_and_consumes_others_with_its_own_group(
    client: Callable[[str], Redis],
) -> None:
    auth = client("auth")
    assert await auth.xadd("novapulse:events:auth", {"a": "b"})
    await auth.xgroup_create("novapulse:events:webhook", "auth", id="0", mkstream=True)
    assert await auth.xreadgroup("auth", "c1", {"novapulse:events:webhook": ">"}, count=1) == []
    refused: list[tuple[str, ...]] = [
        ("XADD", "novapulse:events:webhook", "*", "a", "b"),
        ("XTRIM", "novapulse:events:webhook", "MAXLEN", "0"),
        ("DEL", "novapulse:events:webhook"),
        ("XGROUP", "DESTROY", "novapulse:events:webhook", "webhook"),
        ("XADD", "novapulse:dead:webhook", "*", "a", "b"),
        ("XADD", "novapulse:replay:webhook", "*", "a", "b"),
        ("SET", "novapulse:seen:{webhook}:e1", "done"),
        ("SET", "novapulse:outbox-lock:webhook:db", "x"),
        ("SET", "novapulse:rl:webhook:login:x", "1"),
        ("PUBLISH", "novapulse:outbox-wake:webhook:db", "1"),
        ("KEYS", "*"),
        ("FLUSHALL",),
        ("CONFIG", "GET", "*"),
    ]
    for command in refused:
        with pytest.raises(NoPermissionError):
            await auth.execute_command(*command)
    assert await auth.xrange("novapulse:dead:webhook") == []  # the operations routes read other groups
    assert await client("admin").xlen("novapulse:events:auth") == 1
    anonymous = Redis.from_url(f"redis://127.0.0.1:{auth.connection_pool.connection_kwargs['port']}")
    try:
        assert await anonymous.ping()  # health checks (redis-cli ping) need no password
        with pytest.raises(NoPermissionError):
            await anonymous.get("novapulse:events:auth")
    finally:
        await anonymous.aclose()


async def test_publish_relay_consume_dead_letter_and_rate_limit_as_acl_users(
    runtime_as: Callable[[str], Runtime], client: Callable[[str], Redis]
) -> None:
    auth_rt, notification_rt = runtime_as("auth"), runtime_as("notification")
    auth_bus, notification_bus = EventBus(auth_rt), EventBus(notification_rt)
    outbox = auth_bus.outbox()
    consumer = notification_bus.consumer(claim_interval=0.05, stats_interval=0.0)
    handled: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        handled.append(event.subject or "")

    @consumer.on("notification.requested")  # also reads the workflow stream
    async def requested(event: Event) -> None:
        handled.append("requested")

    async with running(outbox.relay, consumer.run):
        await outbox.add("user.registered", user(1), subject="u1")  # outbox lock, wake channel, XADD
        await auth_bus.publish("user.registered", user(2), subject="u2")
        await wait_until(lambda: sorted(handled) == ["u1", "u2"], timeout=20, message="both events handled")
        # a bad entry written as the auth user is dead-lettered by the notification user
        await auth_rt.redis.xadd(auth_bus.stream(), {"id": "e3", "type": "user.registered", "data": "{"})

        async def dead() -> bool:
            return int(await notification_rt.redis.xlen(notification_bus.keys.dead("notification"))) == 1

        await wait_until(dead, timeout=20, message="dead letter written under ACL")
        assert consumer.idem is not None
        assert await consumer.idem.is_done(auth_bus.event("user.registered", user(9)).id) is False
    page = await notification_bus.operations.dead_letters()
    assert [d.reason for d in page.items] == ["malformed"]
    assert [s.name for s in await notification_bus.operations.streams() if s.name == auth_bus.stream()]
    assert await notification_bus.operations.replay_all() != []
    await client("admin").xadd("novapulse:dead:auth", {"id": "e4", "dead_reason": "malformed"})
    assert len((await notification_bus.operations.dead_letters("auth")).items) == 1
    with pytest.raises(NoPermissionError):  # another group's dead letters: read yes, replay no
        await notification_bus.operations.replay_all("auth")
    # rate limits work as the service's user (a refused command would fail open and allow both)
    assert auth_rt.limiter is not None
    limit = RateLimit("acl-test", 1, 60)
    assert [(await auth_rt.limiter.hit(limit, "k")).allowed for _ in range(2)] == [True, False]
    admin = client("admin")
    assert await admin.exists("novapulse:rl:auth:acl-test:k") == 1


def test_the_chart_ships_the_same_acl_files() -> None:
    for name in ("users.acl.template", "entrypoint.sh"):
        shipped = (ROOT / "helm" / "novapulse" / "files" / "redis" / name).read_text()
        assert shipped == (ROOT / "deploy" / "redis" / name).read_text(), (
            f"cp deploy/redis/{name} helm/novapulse/files/redis/"
        )


def test_every_service_has_a_user_and_compose_connects_each_as_its_own() -> None:
    import yaml

    from tests.deploy.support import service_specs

    template = (ROOT / "deploy" / "redis" / "users.acl.template").read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    redis = compose["services"]["redis"]
    assert redis["entrypoint"] == ["sh", "/etc/novapulse/redis/entrypoint.sh"]
    assert "./deploy/redis:/etc/novapulse/redis:ro" in redis["volumes"]
    specs = service_specs()
    names = set(specs) | {"workflow", "report"}
    for name in names:
        assert f"user {name} on >${{REDIS_PASSWORD_{name.upper()}}} " in template
        if name in specs and specs[name].worker is None:  # no worker (the console): no stream of its own
            assert f"novapulse:events:{name}" not in template
            assert f" ~novapulse:rl:{name}:*" in template
        else:
            assert f" ~novapulse:events:{name} " in template
        for role in ("api", "worker"):
            service = compose["services"].get(f"{name}-{role}")
            if service is not None:
                expected = f"redis://{name}:${{REDIS_PASSWORD_{name.upper()}}}@redis:6379/0"
                assert service["environment"]["REDIS_URL"] == expected


def test_the_chart_connects_each_service_as_its_own_redis_user() -> None:
    from tests.deploy.support import deployed_services, present_services
    from tests.deploy.test_helm import _minimal_values, helm, render

    values = _minimal_values()
    values["redisAcl"] = {"enabled": True}
    del values["secrets"]["values"]["REDIS_URL"]
    services = tuple(present_services())
    with pytest.raises(helm.HelmError, match=r"REDIS_URL_AUTH is required with redisAcl\.enabled"):
        render(values)
    for name in services:
        values["secrets"]["values"][f"REDIS_URL_{name.upper()}"] = f"redis://{name}:pw@redis:6379/0"
    docs = render(values)
    keys = {}
    for doc in docs:
        if doc["kind"] == "Deployment":
            env = {e["name"]: e for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]}
            keys[doc["metadata"]["name"]] = env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"]
    deployed = deployed_services()
    assert len(keys) == sum(len(deployed[name].roles) for name in services)
    assert all(key == f"REDIS_URL_{name.split('-')[-2].upper()}" for name, key in keys.items())
    [acl] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-redis-acl")]
    assert acl["data"]["users.acl.template"] == (ROOT / "deploy" / "redis" / "users.acl.template").read_text().rstrip(
        "\n"
    )


async def test_revocations_are_published_by_auth_only_and_honoured_by_every_verifier(
    client: Callable[[str], Redis],
) -> None:
    """Auth revokes (ZADD + PUBLISH); every other service's verifier reads the set and follows the channel as
    its own Redis user, and may neither add to the set nor publish on the channel."""
    verifiers = {svc: RevocationList(client(svc), "novapulse") for svc in ("webhook", "notification")}
    try:
        for verifier in verifiers.values():
            assert await verifier.is_revoked("s-none") is False  # starts the subscription
        await wait_until(lambda: all(v.synced for v in verifiers.values()), timeout=10, message="subscribed")
        await publish_revocations(client("auth"), "novapulse", {"s-1": 4102444800.0})
        for svc, verifier in verifiers.items():
            await wait_until(partial(verifier.is_revoked, "s-1"), timeout=5, message=f"{svc} honours s-1")
            other = client(svc)
            assert await other.zscore(set_key("novapulse"), "s-1") == 4102444800.0
            for command in (
                ("ZADD", set_key("novapulse"), "1", "s-forged"),
                ("ZREM", set_key("novapulse"), "s-1"),
                ("PUBLISH", channel_name("novapulse"), '{"reload": true}'),
                ("DEL", set_key("novapulse")),
            ):
                with pytest.raises(NoPermissionError):
                    await other.execute_command(*command)
    finally:
        for verifier in verifiers.values():
            await verifier.close()


async def test_the_webhook_service_keeps_its_endpoint_versions_and_slots_as_its_own_user(
    client: Callable[[str], Redis],
) -> None:
    """The keys the webhook service writes besides the bus's (read-your-writes version tokens, cross-worker
    endpoint concurrency slots) are allowed to the webhook user and to nobody else but admin."""
    webhook = client("webhook")
    versions = EndpointVersions(webhook, "novapulse")
    assert await versions.current("o1") == "-"
    await versions.bump("o1")
    token = await versions.current("o1")
    assert token not in (None, "-")  # None would mean Redis refused: the fallback that hid the missing rule
    slots = EndpointSlots(webhook, "novapulse", ttl=10.0)
    assert await slots.try_acquire("e1", "t1", 1) is True
    assert await slots.try_acquire("e1", "t2", 1) is False  # the cap holds: the script ran, it did not fail open
    await slots.release("e1", "t1")
    assert await slots.try_acquire("e1", "t2", 1) is True
    for other in ("auth", "notification"):
        with pytest.raises(NoPermissionError):
            await client(other).set(versions.key("o1"), "forged")


async def test_a_consumer_renews_its_held_entries_on_another_services_stream_as_its_own_user(
    runtime_as: Callable[[str], Runtime],
) -> None:
    """Lease renewal (a script checking and claiming on the producer's stream) is allowed to the consuming
    service's user: a handler held longer than several renewal passes is handled once and nothing fails."""
    auth_bus, notification_bus = EventBus(runtime_as("auth")), EventBus(runtime_as("notification"))
    consumer = notification_bus.consumer(claim_idle=0.6, claim_interval=0.05, stats_interval=0.0)
    release = asyncio.Event()
    calls: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        calls.append(event.id)
        await release.wait()

    async with running(consumer.run):
        await auth_bus.publish("user.registered", user(1), org_id="o1", subject="u1")
        await wait_until(lambda: len(calls) == 1, timeout=10, message="handler running")
        passes = consumer.renewal_passes
        await wait_until(lambda: consumer.renewal_passes >= passes + 3, timeout=10, message="three renewal passes")
        assert consumer.metrics.renewed.labels(auth_bus.stream(), "notification")._value.get() >= 3
        release.set()
        await wait_until(lambda: consumer.idem is not None and consumer.idem.is_done(calls[0]), message="acked")
    assert len(calls) == 1


async def test_the_console_user_checks_its_rate_limits_and_answers_health_checks_and_nothing_else(
    client: Callable[[str], Redis],
) -> None:
    """The console has no stream and no database: its Redis user may run the rate-limit script on its own
    buckets and PING (the health check), and touch nothing else."""
    console = client("console")
    assert await console.ping()
    limiter = RateLimiter(console, Metrics("console", "api"), "console")
    limit = RateLimit("acl-console", 1, 60)
    # allowed then refused: the script ran (a refused command would fail open and allow both)
    assert [(await limiter.hit(limit, "k")).allowed for _ in range(2)] == [True, False]
    assert await client("admin").exists("novapulse:rl:console:acl-console:k") == 1
    refused: list[tuple[str, ...]] = [
        ("XADD", "novapulse:events:console", "*", "a", "b"),
        ("XRANGE", "novapulse:events:auth", "-", "+"),
        ("XREADGROUP", "GROUP", "console", "c", "STREAMS", "novapulse:events:auth", ">"),
        ("GET", "novapulse:rl:auth:login:x"),
        ("SET", "novapulse:console:x", "1"),
        ("ZSCORE", set_key("novapulse"), "s-1"),
        ("SUBSCRIBE", channel_name("novapulse")),
        ("PUBLISH", channel_name("novapulse"), "{}"),
        ("DEL", "novapulse:rl:console:acl-console:k"),
        ("KEYS", "*"),
        ("FLUSHALL",),
        ("CONFIG", "GET", "*"),
        ("CLIENT", "KILL", "ID", "1"),
    ]
    for command in refused:
        with pytest.raises(NoPermissionError):
            await console.execute_command(*command)
