"""The event-bus pages over HTTP against real processes: an operator sees streams, groups, consumers, pending
and lag, and a dead letter with its reason, and replays one and then all (checked on the operations API);
the live fragment answers alone; a tenant gets 404 for every bus page and never sees the entry."""

from __future__ import annotations

import json

import aiohttp
import pytest
from helpers_pages import OPERATIONS_TOKEN, OPERATOR, Browser, enable_mfa, own_loop, sign_in_with_code
from redis.asyncio import Redis

from novapulse_devkit.testing import wait_until

pytestmark = pytest.mark.e2e

OPS = {"Authorization": f"Bearer {OPERATIONS_TOKEN}"}


async def dead_letters(http: aiohttp.ClientSession, base: str) -> list[dict[str, str]]:
    async with http.get(f"{base}/api/v1/webhooks/events/dead-letters", headers=OPS) as resp:
        assert resp.status == 200
        items: list[dict[str, str]] = (await resp.json())["items"]
        return items


async def poison(redis_url: str, names: str, n: int) -> None:
    """``n`` ``user.registered`` events whose data breaks the catalogue model: every group dead-letters them
    (``invalid_data``) on the first delivery."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        for i in range(n):
            await redis.xadd(
                f"{names}:events:auth",
                {
                    "id": f"0190a0a0-0000-7000-8000-00000000000{i}",
                    "type": "user.registered",
                    "source": "auth",
                    "time": "2026-11-28T12:00:00Z",
                    "schema": "1",
                    "data": json.dumps({"nothing": "useful"}),
                },
            )
    finally:
        await redis.aclose()


@own_loop
async def test_operator_sees_the_bus_and_replays_dead_letters_tenant_gets_404(
    visitor, pages_stack, http, email: str
) -> None:
    tenant: Browser = await visitor()
    await tenant.register(email)
    home = await tenant.sign_in(email)
    assert 'href="/bus"' not in home.text
    for path in ("/bus", "/bus/live", "/bus/webhook/dead-letters"):
        assert (await tenant.get(path)).status == 404, path
    assert (await tenant.post("/bus/webhook/dead-letters/replay", {}, home)).status == 404

    ops: Browser = await visitor()
    await ops.register(OPERATOR)
    listed_only = await ops.sign_in(OPERATOR)
    assert 'href="/bus"' not in listed_only.text  # listed, but without MFA no operator
    assert (await ops.get("/bus")).status == 404
    await ops.post("/sign-out", {}, listed_only)
    secret = await enable_mfa(http, pages_stack.url("auth-api"), OPERATOR)
    home = await sign_in_with_code(ops, OPERATOR, secret)
    assert 'href="/bus"' in home.text

    webhook = pages_stack.url("webhook-api")
    await poison(pages_stack.redis_url, pages_stack.names, 2)

    async def two_dead() -> bool:
        return len(await dead_letters(http, webhook)) == 2

    await wait_until(two_dead, timeout=30, message="two dead letters of webhook")
    page = await ops.get("/bus")
    assert page.status == 200
    streams = page.by_id("streams")
    assert f"{pages_stack.names}:events:auth" in streams
    for group in ("webhook", "workflow", "report"):
        assert group in streams
    assert "Lag" in page.text
    assert "Oldest pending" in page.text
    assert "consumers" in page.text
    assert 'hx-trigger="every 5s"' in page.text
    assert "webhook (group webhook): 2" in page.by_id("dead-counts")
    assert "invalid_data" in page.text
    assert "user.registered" in page.text

    live = await ops.get("/bus/live", **{"HX-Request": "true"})
    assert live.status == 200
    assert "<html" not in live.text
    assert 'id="bus-live"' in live.text

    first, second = await dead_letters(http, webhook)
    replayed = await ops.post(f"/bus/webhook/dead-letters/{first['entry_id']}/replay", {}, page)
    assert f"Dead letter {first['entry_id']} of webhook replayed" in " ".join(replayed.flash())
    ids = [d["entry_id"] for d in await dead_letters(http, webhook)]
    assert first["entry_id"] not in ids
    assert second["entry_id"] in ids
    missing = await ops.post(f"/bus/webhook/dead-letters/{first['entry_id']}/replay", {}, page)
    assert "No dead letter" in " ".join(missing.flash())

    everything = await ops.post("/bus/webhook/dead-letters/replay", {}, page)
    assert "dead letters of webhook replayed" in " ".join(everything.flash())
    assert second["entry_id"] not in [d["entry_id"] for d in await dead_letters(http, webhook)]
    assert (await ops.get("/bus/nosuch/dead-letters")).status == 404
