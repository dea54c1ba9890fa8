"""`make run`'s gateway: the shipped nginx config (deploy/nginx/nginx.conf) with only its listen address and
scratch paths moved, and a generated upstreams file naming the local processes. A real nginx (skipped when
it is not installed) in front of real aiohttp upstreams: ``/`` is the console, ``/api/v1/auth/`` is auth,
a service the stack does not run is a 404 problem, probes stay internal. Without nginx, ``make run`` says so
in one line and sends people (and mailed links) to the console itself."""

from __future__ import annotations

import asyncio
import difflib
import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from novapulse_console.client import forwarded_for
from yarl import URL

from novapulse_devkit.gateway import (
    GATEWAY_PORT,
    UPSTREAM_KEEPALIVE,
    GatewayConfigError,
    gateway_config,
    gateway_server,
    nginx_binary,
    shipped_config_dir,
    upstreams_conf,
)
from novapulse_devkit.servers import child_setup, free_port, process_alive
from novapulse_devkit.stack import CONSOLE_PORT, DEV_OPERATOR_EMAIL
from tests.runtime.test_devstack import ROOT, Runner, _caller_env, _environ, _offset

NAME_KEY = web.AppKey("name", str)


def _nginx() -> str:
    found = nginx_binary()
    if found is None:
        pytest.skip("nginx not installed (make deploy-tools as root; Debian: apt-get install -y nginx)")
    return found


@pytest.mark.unit
def test_dev_config_is_the_shipped_config_with_listen_address_and_scratch_paths_moved(tmp_path: Path) -> None:
    conf = gateway_config(tmp_path / "gw", 18080, {"console": 18100, "auth": 18101})
    shipped = (shipped_config_dir() / "nginx.conf").read_text(encoding="utf-8").splitlines()
    generated = conf.read_text(encoding="utf-8").splitlines()
    changed = [
        line
        for line in difflib.unified_diff(shipped, generated, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    removed = [line[1:] for line in changed if line.startswith("-")]
    added = [line[1:] for line in changed if line.startswith("+")]
    assert all("/tmp/" in line or "listen 8080" in line for line in removed), removed
    assert all(f"{tmp_path}/gw/" in line or "listen 127.0.0.1:18080" in line or line.startswith("#") for line in added)
    assert "    include upstreams.conf;" in generated
    upstreams = (tmp_path / "gw" / "upstreams.conf").read_text(encoding="utf-8")
    assert "console      127.0.0.1:18100;" in upstreams
    assert "auth         127.0.0.1:18101;" in upstreams
    assert "resolver" not in upstreams  # IP literals only


@pytest.mark.unit
def test_a_shipped_config_without_the_listen_directive_is_refused(tmp_path: Path) -> None:
    (tmp_path / "nginx.conf").write_text("events {}\nhttp { server { listen 9999; } }\n", encoding="utf-8")
    with pytest.raises(GatewayConfigError, match="listen 8080"):
        gateway_config(tmp_path / "gw", 18080, {}, shipped=tmp_path)


@pytest.mark.unit
def test_a_service_with_several_api_ports_gets_an_upstream_block_with_keepalive() -> None:
    text = upstreams_conf({"console": 18100, "auth": [18101, 18121], "webhook": [18102]}, keepalive=16)
    assert (
        "upstream np_auth {\n    server 127.0.0.1:18101;\n    server 127.0.0.1:18121;\n    keepalive 16;\n}\n" in text
    )
    assert "upstream np_webhook {\n    server 127.0.0.1:18102;\n    keepalive 16;\n}\n" in text
    assert "    auth         np_auth;\n" in text
    assert "    webhook      np_webhook;\n" in text
    # one port stays what make run has always written: an address, no block
    assert "    console      127.0.0.1:18100;\n" in text
    assert "np_console" not in text
    assert text.index("upstream np_auth") < text.index("map $np_service")
    assert f"keepalive {UPSTREAM_KEEPALIVE};" in upstreams_conf({"auth": [1, 2]})
    with pytest.raises(ValueError, match="auth: no port"):
        upstreams_conf({"auth": []})


@pytest.mark.integration
def test_nginx_accepts_the_generated_config_with_upstream_blocks(tmp_path: Path) -> None:
    nginx = _nginx()
    conf = gateway_config(tmp_path / "gw", free_port(), {"console": 18100, "auth": [18101, 18121, 18141]})
    out = subprocess.run(
        [nginx, "-e", "stderr", "-t", "-p", str(conf.parent), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    seen = {
        "upstream": request.app[NAME_KEY],
        "path": request.raw_path,
        "method": request.method,
        "body": body.decode(),
        "headers": dict(request.headers),
        "forwarded_for": forwarded_for(request),  # what the console would send the services
        "peer_port": (request.transport.get_extra_info("peername") or ("", 0))[1] if request.transport else 0,
    }
    return web.json_response(seen)


async def _echo_app(name: str) -> tuple[web.AppRunner, int]:
    """An app answering every request with what it saw (:func:`_echo`), as ``name``, on a free port."""
    app = web.Application()
    app[NAME_KEY] = name
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


@pytest.fixture
async def dev_gateway(tmp_path: Path) -> AsyncIterator[str]:
    """The dev gateway (as ``make run`` starts it) in front of two echo apps standing for console and auth."""
    nginx = _nginx()
    runners: list[web.AppRunner] = []
    upstreams: dict[str, int] = {}
    for name in ("console", "auth"):
        runner, upstreams[name] = await _echo_app(name)
        runners.append(runner)
    listen = free_port()
    conf = gateway_config(tmp_path / "gateway", listen, upstreams)
    server = gateway_server(nginx, conf, listen, tmp_path / "gateway.log")
    try:
        await asyncio.to_thread(server.start, 15.0, setup=child_setup)
        yield f"http://127.0.0.1:{listen}"
    finally:
        server.stop()
        for runner in runners:
            await runner.cleanup()
    pid_file = tmp_path / "gateway" / "nginx.pid"
    assert not pid_file.exists() or not process_alive(int(pid_file.read_text().strip() or 0))


@pytest.mark.integration
async def test_dev_gateway_routes_root_to_the_console_and_api_prefixes_to_their_service(
    dev_gateway: str, http: aiohttp.ClientSession
) -> None:
    host = dev_gateway.removeprefix("http://")
    for path in ("/", "/sign-in?next=%2Fwebhooks", "/static/console.css", "/webhooks/endpoints/ep_1", "/api"):
        async with http.get(URL(dev_gateway + path, encoded=True), allow_redirects=False) as resp:
            assert resp.status == 200, path
            seen = await resp.json()
        assert seen["upstream"] == "console", path
        assert seen["path"] == path, "the gateway must not rewrite the URI"
        # the console compares a form's Origin with the host the browser sees: the port must reach it
        assert seen["headers"]["Host"] == host
        assert seen["headers"]["X-Forwarded-Host"] == host
        assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
        assert len(seen["headers"]["X-Request-ID"]) == 32
    # The console appends its peer (the gateway) to the chain, as a proxy does: services trusting the
    # gateway and the console read right to left past both and find the browser.
    async with http.get(dev_gateway + "/", headers={"X-Forwarded-For": "203.0.113.9"}) as resp:
        seen = await resp.json()
    assert seen["forwarded_for"] == "203.0.113.9, 127.0.0.1, 127.0.0.1"

    form = {"csrf_token": "t", "email": "a@example.com"}
    async with http.post(dev_gateway + "/sign-in", data=form, headers={"Origin": dev_gateway}) as resp:
        seen = await resp.json()
    assert (seen["upstream"], seen["method"]) == ("console", "POST")
    assert seen["body"] == "csrf_token=t&email=a%40example.com"

    for path in ("/api/v1/auth/login", "/api/v1/auth/.well-known/jwks.json", "/api/v1/auth"):
        async with http.post(dev_gateway + path, json={"x": 1}) as resp:
            assert resp.status == 200, path
            seen = await resp.json()
        assert (seen["upstream"], seen["path"]) == ("auth", path)

    # not run by this stack, unknown, or internal: the gateway's own 404 problem, never the console's page
    for path in ("/api/v1/webhooks/endpoints", "/api/v1/nope", "/api/v1", "/api/v1/health/ready", "/api/v1/metrics"):
        async with http.get(dev_gateway + path) as resp:
            assert resp.status == 404, path
            assert resp.headers["Content-Type"].startswith("application/problem+json"), path
            assert json.loads(await resp.text())["status"] == 404


@pytest.mark.integration
async def test_the_gateway_spreads_a_service_over_its_several_api_processes(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Two echo apps stand for two auth api processes behind one ``upstream`` block: requests go to both
    (round robin), unchanged, over connections nginx keeps open (the same peer port each time)."""
    nginx = _nginx()
    apps = [await _echo_app(name) for name in ("auth-1", "auth-2")]
    runners = [runner for runner, _port in apps]
    listen = free_port()
    conf = gateway_config(tmp_path / "gateway", listen, {"auth": [port for _runner, port in apps]})
    server = gateway_server(nginx, conf, listen, tmp_path / "gateway.log")
    try:
        await asyncio.to_thread(server.start, 15.0, setup=child_setup)
        seen: list[tuple[str, int]] = []
        for i in range(6):
            async with http.post(f"http://127.0.0.1:{listen}/api/v1/auth/login", json={"i": i}) as resp:
                assert resp.status == 200
                echo = await resp.json()
            assert (echo["path"], echo["body"]) == ("/api/v1/auth/login", json.dumps({"i": i}))
            seen.append((echo["upstream"], echo["peer_port"]))
        assert sorted({name for name, _ in seen}) == ["auth-1", "auth-2"], seen
        # keepalive: each upstream got its three requests over one connection nginx kept open
        assert len(set(seen)) == 2, seen
    finally:
        server.stop()
        for runner in runners:
            await runner.cleanup()


@pytest.mark.e2e
def test_without_nginx_make_run_says_so_and_sends_everyone_to_the_console(tmp_path: Path) -> None:
    offset = _offset()
    data_dir = tmp_path / "data"
    env = _caller_env(NOVAPULSE_NGINX="off", NOVAPULSE_PORT_OFFSET=str(offset))
    argv = [sys.executable, "-m", "novapulse_devkit.stack", "--data-dir", str(data_dir), "--only", "auth", "console"]
    runner = Runner(argv, env)
    try:
        runner.wait_for("all started")
        console = f"http://127.0.0.1:{CONSOLE_PORT + offset}"
        lines = [line for line in runner.lines if line.startswith("[novapulse]")]
        assert "NOVAPULSE_NGINX=off: no gateway" in lines[0], runner.output
        assert f"Open {console}/" in "".join(lines[1:4]), runner.output
        assert f"all started; open {console}/" in runner.output
        assert "gateway " not in runner.output.replace("no gateway ", "")
        assert not (data_dir / "gateway").exists()
        auth_env = _environ(runner.ready()["auth-api"][1])
        assert auth_env["REGISTRATION_VERIFY_URL"] == f"{console}/register/verify"
        assert auth_env["INVITE_ACCEPT_URL"] == f"{console}/invites/accept"
        assert auth_env["TRUSTED_PROXIES"] == "127.0.0.0/8,::1/128"
        console_env = _environ(runner.ready()["console-api"][1])
        assert console_env["CONSOLE_OPERATOR_EMAILS"] == DEV_OPERATOR_EMAIL
        assert console_env["OPERATIONS_TOKEN"] == auth_env["OPERATIONS_TOKEN"]
        assert len(console_env["OPERATIONS_TOKEN"]) >= 32
        runner.group_signal(signal.SIGTERM)
        assert runner.wait() == 0, runner.output
    finally:
        runner.close()


@pytest.mark.e2e
def test_gateway_port_in_use_is_named_and_nothing_starts(tmp_path: Path) -> None:
    _nginx()
    offset = _offset()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", GATEWAY_PORT + offset))
        sock.listen()
        out = subprocess.run(
            [sys.executable, "-m", "novapulse_devkit.stack", "--data-dir", str(tmp_path / "d"), "--only", "auth"],
            env=_caller_env(NOVAPULSE_PORT_OFFSET=str(offset)),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1, out.stdout
    assert f"port {GATEWAY_PORT + offset} (gateway) is in use" in out.stdout
    assert "NOVAPULSE_NGINX=off" in out.stdout
    assert "ready" not in out.stdout
