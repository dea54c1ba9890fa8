"""A dependency outage seen by a view is a 503 problem with ``Retry-After``, never a 500 (issue 10)."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable

import aiohttp
import pytest

from novapulse_devkit.servers import ServerProcess
from novapulse_devkit.testing import ServiceProcess, wait_until
from novapulse_runtime.problems import DEPENDENCY_RETRY_AFTER

from .conftest import SAMPLE

pytestmark = pytest.mark.chaos


def _metric(text: str, dependency: str) -> float:
    match = re.search(rf'novapulse_http_dependency_unavailable_total{{dependency="{dependency}"}} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize(("kind", "path", "dependency"), [("mongo", "/store", "MongoDB"), ("redis", "/cache", "Redis")])
async def test_dependency_outage_is_503_then_recovers(
    kind: str,
    path: str,
    dependency: str,
    spawn: Callable[..., ServiceProcess],
    server_factory: Callable[..., ServerProcess],
    http: aiohttp.ClientSession,
) -> None:
    dep = server_factory(kind)
    url_var = "MONGO_URL" if kind == "mongo" else "REDIS_URL"
    url = f"mongodb://127.0.0.1:{dep.port}" if kind == "mongo" else f"redis://127.0.0.1:{dep.port}/0"
    svc = spawn(SAMPLE, "api", env={url_var: url, "HEALTH_CHECK_TIMEOUT": "0.5", "RATE_LIMIT_ENABLED": "false"})
    route = svc.url + "/api/v1/sample" + path

    async def served() -> bool:
        async with http.get(route) as r:
            return r.status == 200

    await wait_until(served, timeout=15, message="served while the dependency is up")

    dep.kill()
    async with http.get(route, headers={"X-Request-ID": f"outage-{kind}"}) as r:
        assert r.status == 503, await r.text()
        assert r.content_type == "application/problem+json"
        assert r.headers["Retry-After"] == str(DEPENDENCY_RETRY_AFTER)
        body = await r.json(content_type=None)
    assert body["status"] == 503
    assert body["detail"] == f"{dependency} is unreachable; retry in {DEPENDENCY_RETRY_AFTER} seconds."
    assert body["request_id"] == f"outage-{kind}"
    assert str(dep.port) not in json.dumps(body)  # no address, no stack
    assert "Traceback" not in json.dumps(body)

    lines = [json.loads(line) for line in svc.logs().splitlines() if line.startswith("{")]
    mine = [e for e in lines if e.get("request_id") == f"outage-{kind}" and e["msg"] == "dependency unavailable"]
    assert len(mine) == 1
    assert mine[0]["level"] == "warning"
    assert mine[0]["dependency"] == dependency
    assert not [e for e in lines if e["msg"] == "unhandled error"]
    async with http.get(svc.url + "/api/v1/metrics") as r:
        assert _metric(await r.text(), dependency) == 1.0
    async with http.get(svc.url + "/api/v1/sample/openapi.json") as r:
        doc = await r.json()
    documented = doc["paths"]["/api/v1/sample" + path]["get"]["responses"]["503"]
    assert "Retry-After" in documented["headers"]

    dep.start()
    await wait_until(served, timeout=30, interval=0.2, message="served again after the restart")


@pytest.mark.parametrize(("kind", "path"), [("mongo", "/store"), ("redis", "/cache")])
async def test_paused_dependency_is_503_not_a_hang(
    kind: str,
    path: str,
    spawn: Callable[..., ServiceProcess],
    server_factory: Callable[..., ServerProcess],
    http: aiohttp.ClientSession,
) -> None:
    """SIGSTOP: the server keeps its connections open and answers nothing; the client's socket timeout
    (``MONGO_SOCKET_TIMEOUT_MS``, ``REDIS_SOCKET_TIMEOUT``) turns that into a 503, then SIGCONT recovers."""
    dep = server_factory(kind)
    assert dep.proc is not None
    url_var = "MONGO_URL" if kind == "mongo" else "REDIS_URL"
    url = f"mongodb://127.0.0.1:{dep.port}" if kind == "mongo" else f"redis://127.0.0.1:{dep.port}/0"
    svc = spawn(SAMPLE, "api", env={url_var: url, "HEALTH_CHECK_TIMEOUT": "0.5", "RATE_LIMIT_ENABLED": "false"})
    route = svc.url + "/api/v1/sample" + path

    async def served() -> bool:
        async with http.get(route) as r:
            return r.status == 200

    await wait_until(served, timeout=15, message="served while the dependency is up")
    os.kill(dep.proc.pid, signal.SIGSTOP)
    try:
        async with http.get(route) as r:
            assert r.status == 503, await r.text()
            assert r.headers["Retry-After"] == str(DEPENDENCY_RETRY_AFTER)
    finally:
        os.kill(dep.proc.pid, signal.SIGCONT)
    await wait_until(served, timeout=30, interval=0.2, message="served again after SIGCONT")
