"""Health reports each dependency; live touches none; ready follows dependencies and process state."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from novapulse_devkit.servers import ServerProcess
from novapulse_devkit.testing import ServiceProcess, wait_until

from .conftest import SAMPLE

pytestmark = pytest.mark.chaos


async def _status(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with http.get(url) as r:
        return r.status, await r.json()


@pytest.mark.parametrize("dependency", ["redis", "mongo"])
async def test_dependency_down_and_back(
    dependency: str,
    spawn: Callable[..., ServiceProcess],
    server_factory: Callable[..., ServerProcess],
    http: aiohttp.ClientSession,
    redis_url: str,
    mongo_url: str,
) -> None:
    dep = server_factory(dependency)
    env = {"HEALTH_CHECK_TIMEOUT": "0.5"}
    if dependency == "redis":
        env["REDIS_URL"] = f"redis://127.0.0.1:{dep.port}/0"
    else:
        env["MONGO_URL"] = f"mongodb://127.0.0.1:{dep.port}"
    svc = spawn(SAMPLE, "api", env=env)
    check = "redis" if dependency == "redis" else "mongodb"

    async def ready() -> bool:
        return (await _status(http, svc.url + "/api/v1/health/ready"))[0] == 200

    await wait_until(ready, timeout=15, message="ready")
    status, body = await _status(http, svc.url + "/api/v1/health")
    assert status == 200
    assert body["status"] == "up"
    assert body["checks"][check]["status"] == "up"  # type: ignore[index]
    assert body["checks"]["memory"]["rss_mb"] > 0  # type: ignore[index]

    dep.kill()
    status, body = await _status(http, svc.url + "/api/v1/health")
    assert status == 503
    assert body["checks"][check]["status"] == "down"  # type: ignore[index]
    status, body = await _status(http, svc.url + "/api/v1/health/ready")
    assert status == 503
    assert body["checks"][check] == "down"  # type: ignore[index]
    # liveness touches no dependency
    status, body = await _status(http, svc.url + "/api/v1/health/live")
    assert status == 200

    dep.start()
    await wait_until(ready, timeout=20, message="ready again after restart")
    status, body = await _status(http, svc.url + "/api/v1/health")
    assert status == 200
