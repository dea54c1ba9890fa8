"""Crashes, restarts and misbehaving receivers: kill -9 of the worker mid-delivery, a restart of every
process with delayed retries pending, and a hanging endpoint next to a healthy one."""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

import pytest
from helpers_webhook import Api, Receiver

from novapulse_devkit.testing import wait_until

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
        "WEBHOOK_LEASE": "4",
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
    # Kill while all four lane slots hold a request the receiver has and their start records are durable
    # (they are batched and not awaited, README "Attempt accounting"), so every request seen is logged.
    await wait_until(lambda: len(receiver.seen) >= 4 and receiver.in_flight == 4, timeout=20, message="busy lane")

    async def started_records_durable() -> bool:
        running = sum(m["status"] == "sending" and m["attempts"] >= 1 for m in await all_messages(api))
        return running == 4 and receiver.in_flight == 4

    await wait_until(started_records_durable, timeout=10, interval=0.05, message="start records written")
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


LEASE = 10.0  # WEBHOOK_LEASE default (README "Leases")
POLL = 0.2  # WEBHOOK_POLL_INTERVAL default
RESUME_BOUND = LEASE + POLL  # README: a killed worker's messages are claimed again within this many seconds


async def test_killed_workers_messages_resume_within_the_lease_bound(
    spawn, webhook_env, client, receiver: Receiver
) -> None:
    """kill -9 of a worker mid-burst with a slow receiver: another worker delivers every message within the
    documented bound (lease + poll interval) plus its own start-up time; each message is logged once per
    request the receiver saw, and nothing is sent twice at once."""
    env = {**webhook_env, "WEBHOOK_LEASE": str(LEASE), "WEBHOOK_POLL_INTERVAL": str(POLL), "WEBHOOK_TIMEOUT": "15"}
    api_proc = spawn("novapulse_webhook", "api", env=env)
    worker = spawn("novapulse_webhook", "worker", env=env)
    api: Api = client(api_proc.url)
    receiver.set("slow", delay=3.0)
    await api.endpoint(receiver.url("slow"), concurrency=4)
    total = 8
    for i in range(total):
        await api.event("order.created", {"i": i})
    await wait_until(lambda: receiver.in_flight == 4, timeout=20, message="four attempts in flight")

    async def started_records_durable() -> bool:
        # the start records are batched (README "Attempt accounting"): kill once they are in the database,
        # so each lost attempt is logged and the test can count requests = logged attempts
        return sum(m["attempts"] >= 1 for m in await all_messages(api)) == 4 and receiver.in_flight == 4

    await wait_until(started_records_durable, timeout=10, interval=0.1, message="start records written")
    worker.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    worker.wait(10)
    receiver.set("slow", status=200)  # the successor's requests are answered at once
    spawn("novapulse_webhook", "worker", env=env)
    started = time.monotonic() - killed_at
    msgs: list[dict[str, Any]] = []

    async def settled() -> bool:
        msgs[:] = await all_messages(api)
        return len(msgs) == total and all(m["status"] == "succeeded" for m in msgs)

    # the bound, from the kill, plus the successor's start-up, plus 1 s for eight immediate answers to be logged
    await wait_until(settled, timeout=RESUME_BOUND + started + 1.0, interval=0.2, message="resumed within the bound")
    seen = Counter(s.headers["webhook-id"] for s in receiver.seen)
    assert set(seen) == {m["id"] for m in msgs}
    assert max(seen.values()) <= 2
    for m in msgs:
        attempts = await api.attempts(m["id"])
        assert len(attempts) == seen[m["id"]]
        assert attempts[-1]["outcome"] == "success"


async def test_a_live_worker_keeps_its_lease_beyond_the_lease_length(
    spawn, webhook_env, client, receiver: Receiver
) -> None:
    """An attempt longer than the lease (receiver 5 s, lease 2 s) with a second worker polling: the lease is
    renewed while its holder lives, so each message is sent exactly once."""
    env = {**webhook_env, "WEBHOOK_LEASE": "2", "WEBHOOK_TIMEOUT": "10"}
    api_proc = spawn("novapulse_webhook", "api", env=env)
    spawn("novapulse_webhook", "worker", env=env)
    spawn("novapulse_webhook", "worker", env=env)
    api: Api = client(api_proc.url)
    receiver.set("long", delay=5.0)
    await api.endpoint(receiver.url("long"), concurrency=2)
    for i in range(2):
        await api.event("order.created", {"i": i})
    msgs: list[dict[str, Any]] = []

    async def settled() -> bool:
        msgs[:] = await all_messages(api)
        return len(msgs) == 2 and all(m["status"] == "succeeded" for m in msgs)

    await wait_until(settled, timeout=30, interval=0.5, message="both delivered")
    assert sorted(Counter(s.headers["webhook-id"] for s in receiver.seen).values()) == [1, 1]
    for m in msgs:
        assert [a["outcome"] for a in await api.attempts(m["id"])] == ["success"]
