"""Per-endpoint lanes: a concurrency cap per endpoint, and a blocked lane does not hold up another."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from novapulse_devkit.testing import wait_until
from novapulse_webhook.dispatcher import Dispatcher, Job, RateGate

pytestmark = pytest.mark.unit


def job(endpoint: str, n: int, concurrency: int = 2, rate: int | None = None) -> Job:
    return Job(
        id=f"{endpoint}-{n}",
        org_id="o",
        endpoint_id=endpoint,
        event_id=f"e{n}",
        event_type="t",
        body="{}",
        attempts=0,
        round_start=0,
        claim="c",
        lease_until=datetime.now(UTC),
        concurrency=concurrency,
        rate_limit=rate,
    )


async def test_blocked_lane_holds_only_its_own_slots() -> None:
    release = asyncio.Event()
    running: dict[str, int] = {"slow": 0, "fast": 0}
    peak = {"slow": 0, "fast": 0}
    done: list[str] = []

    async def process(j: Job) -> None:
        running[j.endpoint_id] += 1
        peak[j.endpoint_id] = max(peak[j.endpoint_id], running[j.endpoint_id])
        if j.endpoint_id == "slow":
            await release.wait()
        else:
            await asyncio.sleep(0)
        running[j.endpoint_id] -= 1
        done.append(j.id)

    d = Dispatcher(process, queue_limit=5)
    for i in range(5):
        assert d.submit(job("slow", i))
        assert d.submit(job("fast", i))
    assert d.submit(job("slow", 5))
    assert d.submit(job("slow", 6))  # two running, five queued: the lane is full
    assert not d.submit(job("slow", 7)), "a full lane refuses more"
    # the fast lane finishes while the slow lane is still blocked
    await wait_until(lambda: sum(x.startswith("fast") for x in done) == 5, timeout=5, message="fast lane done")
    assert sorted(x for x in done if x.startswith("fast")) == [f"fast-{i}" for i in range(5)]
    assert peak["slow"] == 2
    assert d.saturated() == ["slow"]
    release.set()
    await wait_until(lambda: len(done) == 12, timeout=5, message="all jobs run")
    assert await d.drain(5) == []
    assert d.in_flight == 0


async def test_drain_returns_queued_jobs() -> None:
    gate = asyncio.Event()

    async def process(j: Job) -> None:
        await gate.wait()

    d = Dispatcher(process)
    for i in range(4):
        d.submit(job("a", i, concurrency=1))
    await asyncio.sleep(0)
    waiter = asyncio.ensure_future(d.drain(5))
    await asyncio.sleep(0)
    gate.set()
    dropped = await waiter
    assert [j.id for j in dropped] == ["a-1", "a-2", "a-3"]


async def test_rate_gate_spaces_attempts() -> None:
    gate = RateGate(20)
    started = time.monotonic()
    for _ in range(5):
        await gate.wait()
    assert time.monotonic() - started >= 0.18  # 4 intervals of 50 ms


async def test_cancel_withdraws_a_queued_job_and_stops_a_running_one() -> None:
    """A lost claim withdraws the message from this worker: a queued job never starts, a running attempt is
    cancelled, and the lane's slots and the in-flight count are given back."""
    release = asyncio.Event()
    started: list[str] = []
    cancelled: list[str] = []

    async def process(j: Job) -> None:
        started.append(j.id)
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.append(j.id)
            raise

    d = Dispatcher(process)
    running, queued = job("a", 1, concurrency=1), job("a", 2, concurrency=1)
    assert d.submit(running)
    assert d.submit(queued)
    await wait_until(lambda: started == ["a-1"], timeout=5)
    assert d.in_flight == 2
    assert d.cancel(queued) is True
    assert d.in_flight == 1
    assert d.cancel(running) is True
    await wait_until(lambda: d.in_flight == 0, timeout=5)
    assert cancelled == ["a-1"]
    assert started == ["a-1"], "the withdrawn queued job never started"
    assert d.cancel(running) is False, "nothing left to withdraw"
