"""Read your writes: an event that happens after an endpoint write was answered follows that write, with
zero delay (real api and worker processes, a real receiver, platform events over the real stream)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers_webhook import Api, Receiver
from redis.asyncio import Redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from novapulse_devkit.testing import wait_until
from novapulse_runtime.bus.envelope import build, encode
from novapulse_runtime.catalog.auth import UserInvited, UserRoleChanged

pytestmark = pytest.mark.e2e
ORG = "org-a"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    r = Redis.from_url(redis_url, decode_responses=True)
    yield r
    await r.aclose()


class Stream:
    """Publishes auth platform events and waits until the webhook group has handled them."""

    def __init__(self, redis: Redis, names: str) -> None:
        self.redis = redis
        self.key = f"{names}:events:auth"
        self.n = 0

    async def invited(self) -> str:
        self.n += 1
        data = UserInvited(
            invite_id=f"i{self.n}",
            org_id=ORG,
            email=f"x{self.n}@example.com",
            role="member",
            invited_by="u1",
            expires_at=datetime.now(UTC) + timedelta(days=7),
        )
        return await self._add(build("user.invited", data, source="auth", org_id=ORG, subject=f"i{self.n}"))

    async def role_changed(self) -> str:
        self.n += 1
        data = UserRoleChanged(user_id=f"u{self.n}", org_id=ORG, role="admin", changed_by="u1")
        return await self._add(build("user.role_changed", data, source="auth", org_id=ORG, subject=f"u{self.n}"))

    async def _add(self, event: Any) -> str:
        entry: str = await self.redis.xadd(self.key, encode(event))  # type: ignore[arg-type]
        return entry

    async def handled(self, entry: str) -> None:
        """Wait until the webhook group has read ``entry`` and acknowledged everything (fan-out is durable
        before the acknowledgement)."""

        async def done() -> bool:
            try:
                groups = await self.redis.xinfo_groups(self.key)
            except Exception:
                return False
            for g in groups:
                if g["name"] == "webhook":
                    last = tuple(int(x) for x in g["last-delivered-id"].split("-"))
                    return bool(last >= tuple(int(x) for x in entry.split("-")) and g["pending"] == 0)
            return False

        await wait_until(done, timeout=20, message=f"entry {entry} handled by the webhook group")


async def test_endpoint_writes_are_followed_by_the_very_next_event(
    stack, client, receiver: Receiver, redis: Redis, names: str
) -> None:
    api_proc, _ = stack()
    api: Api = client(api_proc.url, org=ORG)
    stream = Stream(redis, names)
    # The worker has just looked at the organisation and seen no endpoint (its cache says "none").
    await stream.handled(await stream.invited())

    # 1. Create, then invite at once: delivered to the new endpoint.
    ep = await api.endpoint(receiver.url("new"), event_types=["user.invited"])
    await stream.invited()
    await wait_until(lambda: len(receiver.on("new")) == 1, timeout=20, message="delivered to the new endpoint")

    # 2. PATCH adds an event type, then that event at once: delivered.
    await api.ok("PATCH", f"/endpoints/{ep['id']}", {"event_types": ["user.invited", "user.role_changed"]})
    await stream.role_changed()
    await wait_until(lambda: len(receiver.on("new")) == 2, timeout=20, message="added type delivered")
    assert b"user.role_changed" in receiver.on("new")[1].body

    # 3. Rotate with no grace, then an event at once: signed with the new secret only.
    old = (await api.ok("GET", f"/endpoints/{ep['id']}/secret"))["secret"]
    new = (await api.ok("POST", f"/endpoints/{ep['id']}/secret/rotate", {"grace_seconds": 0}))["secret"]
    await stream.invited()
    await wait_until(lambda: len(receiver.on("new")) == 3, timeout=20, message="delivered after rotation")
    seen = receiver.on("new")[2]
    assert Webhook(new).verify(seen.body, seen.headers)["type"] == "user.invited"
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(seen.body, seen.headers)

    # 4. Custom headers changed, then an event at once: the new header is sent.
    await api.ok("PATCH", f"/endpoints/{ep['id']}", {"headers": {"X-Tenant": "v2"}})
    await stream.invited()
    await wait_until(lambda: len(receiver.on("new")) == 4, timeout=20, message="delivered after header change")
    assert receiver.on("new")[3].headers.get("X-Tenant") == "v2"

    # 5. Disabled, then an event at once: nothing is created for it once the group has handled the event.
    await api.ok("PATCH", f"/endpoints/{ep['id']}", {"enabled": False})
    await stream.handled(await stream.invited())
    assert len(await api.messages(endpoint_id=ep["id"])) == 4
    assert len(receiver.on("new")) == 4

    # 6. Deleted, then re-created elsewhere: the next event goes to the new one only.
    await api.ok("DELETE", f"/endpoints/{ep['id']}", expect=204)
    await api.endpoint(receiver.url("other"), event_types=["user.*"])
    await stream.invited()
    await wait_until(lambda: len(receiver.on("other")) == 1, timeout=20, message="delivered to the replacement")
    assert len(receiver.on("new")) == 4


async def test_endpoint_rate_limit_holds_across_worker_processes(spawn, webhook_env, client, receiver) -> None:
    """The endpoint's ``rate_limit`` (messages/s) is one budget for the endpoint, not one per worker process:
    two workers deliver 12 messages at 2/s (burst 2) in no less than (12 - 2) / 2 = 5 s."""
    api_proc = spawn("novapulse_webhook", "api", env=webhook_env)
    spawn("novapulse_webhook", "worker", env=webhook_env)
    spawn("novapulse_webhook", "worker", env=webhook_env)
    api: Api = client(api_proc.url, org=ORG)
    await api.endpoint(receiver.url("limited"), rate_limit=2, concurrency=8)
    for i in range(12):
        await api.event("order.created", {"i": i})
    await wait_until(lambda: len(receiver.on("limited")) == 12, timeout=40, message="all delivered")
    seen = receiver.on("limited")
    assert seen[-1].at - seen[0].at >= 4.5, "two workers shared one 2/s budget (GCRA, 1 s burst)"


async def test_endpoint_concurrency_holds_across_worker_processes(spawn, webhook_env, client, receiver) -> None:
    """``concurrency`` is one cap for the endpoint across every worker (a Redis semaphore), not one per
    worker process: two workers, concurrency 2, a slow receiver: never more than 2 requests at once."""
    api_proc = spawn("novapulse_webhook", "api", env=webhook_env)
    spawn("novapulse_webhook", "worker", env=webhook_env)
    spawn("novapulse_webhook", "worker", env=webhook_env)
    api: Api = client(api_proc.url, org=ORG)
    receiver.set("capped", delay=0.4)
    await api.endpoint(receiver.url("capped"), concurrency=2)
    for i in range(12):
        await api.event("order.created", {"i": i})
    await wait_until(lambda: len(receiver.on("capped")) == 12, timeout=40, message="all delivered")
    assert receiver.peak["capped"] == 2
