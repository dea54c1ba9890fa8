"""The gateway config, run by a real nginx in front of real aiohttp upstreams on 127.0.0.1.

The test uses deploy/nginx/nginx.conf as shipped, with three mechanical substitutions: the listen address
(a free loopback port), the /tmp scratch paths (a per-test directory) and upstreams.conf (service name ->
the local upstream instead of the compose DNS name). Routing, request ids, forwarding headers, body limit
and error bodies are the shipped rules. Skipped when nginx is not installed (Debian: apt-get install nginx).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from novapulse_devkit.servers import free_port
from tests.deploy.support import DEPLOY, SUITE, tool

NGINX_DIR = DEPLOY / "nginx"
SERVICE_KEY = web.AppKey("service", str)


def _nginx() -> str:
    found = tool("nginx", "/usr/sbin")
    if found is None:
        pytest.skip("nginx not installed (Debian: apt-get install -y nginx)")
    return found


def _config(workdir: Path, listen: int, upstreams: dict[str, int]) -> Path:
    text = (NGINX_DIR / "nginx.conf").read_text(encoding="utf-8")
    assert text.count("listen 8080 default_server;") == 1
    text = text.replace("listen 8080 default_server;", f"listen 127.0.0.1:{listen} default_server;")
    text = text.replace("/tmp/", f"{workdir}/")
    shipped = (NGINX_DIR / "upstreams.conf").read_text(encoding="utf-8")
    for service in SUITE:
        assert re.search(rf"^\s*{service}\s+{service}-api:{SUITE[service][0]};", shipped, flags=re.M), service
    lines = "\n".join(f"    {name} 127.0.0.1:{port};" for name, port in upstreams.items())
    (workdir / "upstreams.conf").write_text(
        f'map $np_service $np_upstream {{\n{lines}\n    default "";\n}}\n', encoding="utf-8"
    )
    conf = workdir / "nginx.conf"
    conf.write_text(text, encoding="utf-8")
    return conf


def test_config_is_valid(tmp_path: Path) -> None:
    nginx = _nginx()
    conf = _config(tmp_path, free_port(), {s: 1 for s in SUITE})
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in ("nginx.conf", "upstreams.conf"):
        (shipped / name).write_text((NGINX_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    for path in (conf, shipped / "nginx.conf"):
        out = subprocess.run(
            [nginx, "-t", "-p", str(path.parent), "-c", str(path)], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr


@dataclass
class Gateway:
    url: str
    log: Path
    down_port: int


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    payload = {
        "service": request.app[SERVICE_KEY],
        "path": request.raw_path,
        "method": request.method,
        "body_bytes": len(body),
        "headers": {k: v for k, v in request.headers.items()},
    }
    return web.json_response(payload, headers={"X-Request-ID": "upstream-own-id"})


async def _wait_port(port: int, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    nginx = _nginx()
    runners: list[web.AppRunner] = []
    upstreams: dict[str, int] = {}
    for service in ("auth", "webhook", "notification"):
        app = web.Application(client_max_size=8 * 1_048_576)
        app[SERVICE_KEY] = service
        app.router.add_route("*", "/{tail:.*}", _echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        upstreams[service] = port
    down_port = free_port()  # nothing listens here: the "report" service is down
    upstreams["report"] = down_port
    listen = free_port()
    conf = _config(tmp_path, listen, upstreams)
    log = tmp_path / "access.log"
    # As root, workers must run as root too: they write the per-test scratch directory.
    directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    args = [nginx, "-p", str(tmp_path), "-c", str(conf), "-g", directives]
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*args, stdout=out, stderr=subprocess.STDOUT)
    try:
        await _wait_port(listen, asyncio.get_running_loop().time() + 15)
        yield Gateway(f"http://127.0.0.1:{listen}", log, down_port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def test_routes_each_prefix_to_its_service_unchanged(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    cases = {
        "/api/v1/auth/login": "auth",
        "/api/v1/auth": "auth",
        "/api/v1/webhooks/endpoints/ep_1/messages?limit=5&cursor=a%2Fb": "webhook",
        "/api/v1/webhooks/events": "webhook",
        "/api/v1/notifications/preferences": "notification",
    }
    for path, service in cases.items():
        async with http.post(URL(gateway.url + path, encoded=True), json={"x": 1}) as resp:
            assert resp.status == 200, path
            seen = await resp.json()
        assert seen["service"] == service
        assert seen["path"] == path, "the gateway must not rewrite the URI"
        assert seen["method"] == "POST"


async def test_request_id_generated_propagated_and_returned(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(gateway.url + "/api/v1/auth/me") as resp:
        seen = await resp.json()
        returned = resp.headers.getall("X-Request-ID")
    assert re.fullmatch(r"[0-9a-f]{32}", seen["headers"]["X-Request-ID"])
    assert returned == [seen["headers"]["X-Request-ID"]], "one X-Request-ID, the one the service saw"

    async with http.get(gateway.url + "/api/v1/auth/me", headers={"X-Request-ID": "caller-42.abc"}) as resp:
        seen = await resp.json()
        assert resp.headers["X-Request-ID"] == "caller-42.abc"
    assert seen["headers"]["X-Request-ID"] == "caller-42.abc"

    # Junk (or an over-long value) is replaced, never forwarded.
    for junk in ("has spaces <script>", "x" * 200):
        async with http.get(gateway.url + "/api/v1/auth/me", headers={"X-Request-ID": junk}) as resp:
            seen = await resp.json()
        assert re.fullmatch(r"[0-9a-f]{32}", seen["headers"]["X-Request-ID"])

    entries = [json.loads(line) for line in gateway.log.read_text().splitlines() if line.startswith("{")]
    assert any(e["request_id"] == "caller-42.abc" and e["service"] == "auth" for e in entries)


async def test_forwarding_headers_and_trace_context(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {"X-Forwarded-For": "203.0.113.9", "traceparent": traceparent, "tracestate": "vendor=1"}
    async with http.get(gateway.url + "/api/v1/webhooks/endpoints", headers=headers) as resp:
        seen = (await resp.json())["headers"]
    # The peer (127.0.0.1) is appended: services read right to left and trust only TRUSTED_PROXIES.
    assert seen["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
    assert seen["X-Real-IP"] == "127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["traceparent"] == traceparent
    assert seen["tracestate"] == "vendor=1"
    assert seen["Host"].startswith("127.0.0.1")


async def test_unknown_paths_probes_metrics_and_operations_are_not_proxied(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    internal = (
        "/api/v1/health/ready",
        "/api/v1/metrics",
        "/api/v1/notifications/events/dead-letters",
        "/api/v1/webhooks/events/streams",
        "/api/v1/auth/events/dead-letters/1-0/replay",
    )
    for path in ("/api/v1/authx", "/api/v1/unknown/x", "/admin", *internal):
        async with http.get(gateway.url + path) as resp:
            assert resp.status == 404, path
            assert resp.headers["Content-Type"].startswith("application/problem+json")
            problem = json.loads(await resp.text())
            assert problem["status"] == 404
            assert problem["request_id"] == resp.headers["X-Request-ID"]
    async with http.get(gateway.url + "/healthz") as resp:
        assert resp.status == 200


async def test_body_limit(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.post(gateway.url + "/api/v1/auth/register", data=io.BytesIO(b"x" * 1_000_000)) as resp:
        assert resp.status == 200
        assert (await resp.json())["body_bytes"] == 1_000_000
    async with http.post(gateway.url + "/api/v1/auth/register", data=io.BytesIO(b"x" * (1_048_576 + 1))) as resp:
        assert resp.status == 413
        problem = json.loads(await resp.text())
        assert problem["status"] == 413


async def test_a_down_service_is_a_503_problem(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(gateway.url + "/api/v1/reports/r1") as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        problem = json.loads(await resp.text())
        assert problem["request_id"] == resp.headers["X-Request-ID"]
