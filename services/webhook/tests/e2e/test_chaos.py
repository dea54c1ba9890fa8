"""Crashes, restarts and misbehaving receivers: kill -9 of the worker mid-delivery, a restart of every
process with delayed retries pending, and a hanging endpoint next to a healthy one."""

from __future__ import annotations

import signal
from collections import Counter
from typing import Any

import pytest
from helpers_webhook import Api, Receiver

from novapulse_runtime.testing import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]


async def all_messages(api: Api) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = await api.ok("GET", "/messages", **params)
        out.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return out


async def test_kill_9_mid_delivery_loses_nothing_and_logs_every_request(
    spawn, webhook_env, client, receiver: Receiver
) -> None:
    env = {
        **webhook_env,
        "WEBHOOK_TIMEOUT": "3",
        "WEBHOOK_LEASE_MARGIN": "1",
        "WEBHOOK_RETRY_SCHEDULE": "0,0.5,0.5,0.5",
    }
    api_proc = spawn("novapulse_webhook", "api", env=env)
    worker = spawn("novapulse_webhook", "worker", env=env)
    api: Api = client(api_proc.url)
    receiver.set("slow", delay=1.0)
    await api.endpoint(receiver.url("slow"), concurrency=4)
    total = 24
    for i in range(total):
        await api.event("order.created", {"i": i})
    # Kill while all four lane slots hold a request the receiver has (so no attempt is between its start
    # record and the wire).
    await wait_until(lambda: len(receiver.seen) >= 4 and receiver.in_flight == 4, timeout=20, message="busy lane")
    worker.signal(signal.SIGKILL)
    worker.wait(10)
    spawn("novapulse_webhook", "worker", env=env)

    msgs: list[dict[str, Any]] = []

    async def settled() -> bool:
        msgs[:] = await all_messages(api)
        return len(msgs) == total and all(m["status"] == "succeeded" for m in msgs)

    await wait_until(settled, timeout=60, interval=0.5, message="every message delivered")
    seen = Counter(s.headers["webhook-id"] for s in receiver.seen)
    assert set(seen) == {m["id"] for m in msgs}
    logged = 0
    lost = 0
    for m in msgs:
        attempts = await api.attempts(m["id"])
        assert len(attempts) == seen[m["id"]], (m["id"], attempts, seen[m["id"]])
        assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
        assert attempts[-1]["status"] == 200
        logged += len(attempts)
        lost += sum(a["outcome"] == "lost" for a in attempts)
    assert logged == len(receiver.seen)
    assert lost >= 1, "the killed worker's in-flight attempts are logged as lost"


async def test_delayed_retries_survive_a_restart_of_every_process(
    spawn, webhook_env, client, receiver: Receiver
) -> None:
    env = {**webhook_env, "WEBHOOK_RETRY_SCHEDULE": "0,4"}
    api_proc = spawn("novapulse_webhook", "api", env=env)
    worker = spawn("novapulse_webhook", "worker", env=env)
    api: Api = client(api_proc.url)
    receiver.set("later", script=[(500, {})])
    await api.endpoint(receiver.url("later"))
    await api.event("order.created", {"i": 1})
    await wait_until(lambda: len(receiver.on("later")) == 1, timeout=15)
    msg_id = receiver.on("later")[0].headers["webhook-id"]

    async def pending() -> bool:
        m = await api.ok("GET", f"/messages/{msg_id}")
        return m["status"] == "pending" and m["next_attempt_at"] is not None

    await wait_until(pending, timeout=10, message="retry scheduled")
    for proc in (worker, api_proc):
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    api_proc = spawn("novapulse_webhook", "api", env=env)
    spawn("novapulse_webhook", "worker", env=env)
    api = client(api_proc.url)
    await wait_until(lambda: len(receiver.on("later")) == 2, timeout=20, message="retry after restart")
    first, second = receiver.on("later")
    assert second.headers["webhook-id"] == msg_id
    assert second.at - first.at >= 3.0  # 4 s ± 20 %
    await wait_until(lambda: _status(api, msg_id, "succeeded"), timeout=10, message="succeeded after restart")


async def _status(api: Api, msg_id: str, status: str) -> bool:
    return bool((await api.ok("GET", f"/messages/{msg_id}"))["status"] == status)


async def test_hanging_endpoint_does_not_delay_a_healthy_one(stack, client, receiver: Receiver) -> None:
    api_proc, _ = stack(WEBHOOK_TIMEOUT="5")
    api: Api = client(api_proc.url)
    receiver.set("hang", hang=True)
    await api.endpoint(receiver.url("hang"), concurrency=2)
    await api.endpoint(receiver.url("fast"))
    for i in range(20):
        await api.event("order.created", {"i": i})
    await wait_until(lambda: len(receiver.on("fast")) == 20, timeout=15, message="healthy endpoint served")
    assert len(receiver.on("hang")) <= 2, "the hanging endpoint holds only its own two slots"
    assert receiver.in_flight >= 1
