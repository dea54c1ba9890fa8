"""A real worker process of a service (the webhook worker: a ``*`` consumer of every stream) given foreign
entries: it dead-letters them with their reasons, handles the next good event and stays alive (it used to
exit with status 1 on the first entry that was not UTF-8, again after each restart)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from cryptography.fernet import Fernet

from novapulse_devkit.testing import ServiceProcess, wait_until
from novapulse_runtime.catalog.auth import UserRegistered
from novapulse_runtime.redisconn import connect_redis

pytestmark = pytest.mark.e2e


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Any]:
    client = connect_redis(redis_url, socket_timeout=10.0, decode_responses=False)  # a cluster too
    yield client
    await client.aclose()


def entry(n: int, **over: str | bytes) -> dict[str, str | bytes]:
    data = UserRegistered(
        user_id=f"u{n}", org_id="o1", email=f"u{n}@example.com", name="U", role="owner", organization="A"
    )
    fields: dict[str, str | bytes] = {
        "id": f"0190a0a0-0000-7000-8000-0000000000{n:02d}",
        "type": "user.registered",
        "source": "auth",
        "time": "2026-11-30T00:00:00Z",
        "schema": "1",
        "org_id": "o1",
        "data": json.dumps(data.model_dump()),
    }
    return fields | over


async def consumed(url: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/v1/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("novapulse_events_consumed_total{") and 'type="user.registered"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_webhook_worker_survives_foreign_entries_and_handles_the_next_event(
    spawn: Callable[..., ServiceProcess], raw: Any, names: str
) -> None:
    env = {
        "WEBHOOK_SECRET_KEYS": Fernet.generate_key().decode(),
        "EVENTS_NAMESPACE": names,
        "RATE_LIMIT_ENABLED": "false",
    }
    worker = spawn("novapulse_webhook", "worker", env=env)
    auth, workflow = f"{names}:events:auth", f"{names}:events:workflow"

    async def grouped() -> bool:
        return bool(await raw.exists(auth)) and any(g["name"] == b"webhook" for g in await raw.xinfo_groups(auth))

    await wait_until(grouped, timeout=30, message="the worker's group on the auth stream")
    await raw.xadd(auth, entry(1, data=b"\xff"))  # the XADD
    await raw.xadd(auth, entry(2, data="[" * 60_000 + "]" * 60_000))
    await raw.xadd(workflow, entry(3, type="user.role_changed"))
    await raw.xadd(auth, entry(4))
    dead = f"{names}:dead:webhook"

    async def three_dead() -> bool:
        return int(await raw.xlen(dead)) == 3

    await wait_until(three_dead, timeout=30, message=f"three dead letters; log:\n{worker.logs()}")
    reasons = sorted(f[b"dead_reason"] for _, f in await raw.xrange(dead))
    assert reasons == [b"malformed", b"malformed", b"wrong_stream"]

    async def handled() -> bool:
        return await consumed(worker.url) == 1.0

    await wait_until(handled, timeout=30, message="the good event handled")
    assert worker.proc is not None
    assert worker.proc.poll() is None, worker.logs()
    async with aiohttp.ClientSession() as http, http.get(f"{worker.url}/api/v1/health/ready") as resp:
        assert resp.status == 200
