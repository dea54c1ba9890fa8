"""Graceful shutdown: in-flight requests finish, new connections are refused, exit 0; a second signal
exits at once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import aiohttp
import pytest

from novapulse_devkit.testing import ServiceProcess, wait_until

from .conftest import SAMPLE

pytestmark = pytest.mark.chaos


async def test_in_flight_requests_finish(spawn: Callable[..., ServiceProcess], http: aiohttp.ClientSession) -> None:
    svc = spawn(SAMPLE, "all")

    async def slow(i: int) -> int:
        async with http.get(svc.url + "/api/v1/sample/slow", params={"seconds": "1.5"}) as r:
            await r.read()
            return r.status

    in_flight = [asyncio.create_task(slow(i)) for i in range(10)]

    async def all_in_flight() -> bool:
        async with http.get(svc.url + "/api/v1/metrics") as r:
            return "novapulse_http_requests_in_flight 11.0" in await r.text()

    await wait_until(all_in_flight, timeout=10, message="10 requests in flight")
    svc.signal(signal.SIGTERM)
    assert await asyncio.gather(*in_flight) == [200] * 10
    assert await asyncio.to_thread(svc.wait, 15) == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(svc.url + "/api/v1/health/live") as r:
            await r.read()
    logs = svc.logs()
    assert '"msg": "shutting down"' in logs
    assert '"msg": "ticker stopped"' in logs  # background work was told to stop and finished
    assert '"exit_code": 0' in logs


async def test_second_signal_exits_at_once(spawn: Callable[..., ServiceProcess], http: aiohttp.ClientSession) -> None:
    svc = spawn(SAMPLE, "api", env={"SHUTDOWN_TIMEOUT": "60"})
    task = asyncio.create_task(http.get(svc.url + "/api/v1/sample/slow", params={"seconds": "30"}))

    async def in_flight() -> bool:
        async with http.get(svc.url + "/api/v1/metrics") as r:
            return "novapulse_http_requests_in_flight 2.0" in await r.text()

    await wait_until(in_flight, timeout=10, message="slow request in flight")
    svc.signal(signal.SIGTERM)
    await wait_until(lambda: "shutting down" in svc.logs(), timeout=10, message="drain started")
    svc.signal(signal.SIGTERM)
    assert await asyncio.to_thread(svc.wait, 5) == 130
    task.cancel()
    with pytest.raises((asyncio.CancelledError, aiohttp.ClientError)):
        await task
