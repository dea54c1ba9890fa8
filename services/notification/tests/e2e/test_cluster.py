"""Register → welcome mail with every process on a real 3-primary Redis Cluster (``redis+cluster://``): the
auth service's outbox relay publishes ``user.registered`` to its stream, the notification worker consumes it
and a real SMTP server receives the mail."""

from __future__ import annotations

import aiohttp
import pytest
from cryptography.fernet import Fernet
from helpers_notification import SmtpSink

from novapulse_devkit.servers import wait_for_port
from novapulse_devkit.testing import Servers, wait_until

pytestmark = pytest.mark.e2e

AUTH = "/api/v1/auth"
PASSWORD = "Correct-Horse-Battery-9"


@pytest.fixture
def servers(servers: Servers, redis_cluster_url: str) -> Servers:
    """The session's MongoDB-wire server with the session's Redis Cluster."""
    return Servers(redis_cluster_url, servers.mongo_url)


async def test_register_sends_the_welcome_mail_on_a_redis_cluster(spawn, sink: SmtpSink, names: str, tmp_path) -> None:
    auth_env = {
        "AUTH_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "EVENTS_NAMESPACE": names,
        "REGISTRATION_EMAIL_VERIFICATION": "false",
    }
    auth_api = spawn("novapulse_auth", "api", env=auth_env, start=False)
    assert auth_api.env["REDIS_URL"].startswith("redis+cluster://")
    jwks = f"{auth_api.url}{AUTH}/.well-known/jwks.json"
    auth_api.env["AUTH_JWKS_URL"] = jwks
    auth_worker = spawn("novapulse_auth", "worker", env={**auth_env, "AUTH_JWKS_URL": jwks}, start=False)
    note_env = {
        **sink.env(),
        "AUTH_JWKS_URL": jwks,
        "EVENTS_NAMESPACE": names,
        "MAIL_CATCHER_DIR": str(tmp_path / "mail"),
    }
    note_worker = spawn("novapulse_notification", "worker", env=note_env, start=False)
    processes = [auth_api, auth_worker, note_worker]
    for proc in processes:  # all three start at once, then each is awaited (a 2-core machine imports slowly)
        proc.start(wait_ready=False)
    for proc in processes:
        assert proc.proc is not None
        problem = wait_for_port(proc.proc, proc.port, 60)
        assert problem is None, f"{proc.package} {proc.role} {problem}:\n{proc.logs()}"

    async with aiohttp.ClientSession() as http:
        body = {"email": "olive@acme.example.com", "password": PASSWORD, "name": "Olive", "organization": "Acme"}
        async with http.post(f"{auth_api.url}{AUTH}/register", json=body) as resp:
            assert resp.status == 201, await resp.text()
        async with http.post(
            f"{auth_api.url}{AUTH}/login", json={"email": "olive@acme.example.com", "password": PASSWORD}
        ) as resp:
            assert resp.status == 200, await resp.text()  # rate limits and sessions on the cluster too

    await wait_until(
        lambda: len(sink.to("olive@acme.example.com")) == 1, timeout=40, interval=0.1, message="the welcome mail"
    )
    [welcome] = sink.to("olive@acme.example.com")
    assert welcome.message["Subject"] == "Welcome to NovaPulse, Olive"
