"""Helpers for the auth service's tests."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import pyotp
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet

from novapulse_auth import bootstrap
from novapulse_auth.bootstrap import Services
from novapulse_auth.settings import AuthSettings
from novapulse_devkit.servers import free_port
from novapulse_runtime.http import create_app
from novapulse_runtime.process import ServiceSpec, compose
from novapulse_runtime.runtime import Runtime

PREFIX = "/api/v1/auth"
GOOD_PASSWORD = "Correct-Horse-Battery-9"
TEST_KEY = Fernet.generate_key().decode()

# Cheapest argon2 parameters the settings accept (the OWASP floor): tests hash many passwords.
FAST = {"argon2_memory_kib": 19 * 1024, "argon2_time_cost": 2}
GENEROUS_LIMITS = {
    "login_ip_limit": 10_000,
    "login_account_limit": 10_000,
    "login_account_ceiling": 10_000,
    "register_email_limit": 10_000,
    "invite_recipient_limit": 10_000,
    "register_ip_limit": 10_000,
    "invite_org_limit": 10_000,
    "mfa_verify_user_limit": 10_000,
    "mfa_verify_ip_limit": 10_000,
    "refresh_ip_limit": 10_000,
}


@dataclass
class Account:
    email: str
    password: str
    user_id: str
    org_id: str
    access: str = ""
    refresh: str = ""
    totp_secret: str = ""
    recovery_codes: list[str] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


@dataclass
class AuthApp:
    client: TestClient[Any, Any]
    rt: Runtime
    settings: AuthSettings
    url: str
    services: Services
    _n: int = 0

    async def close(self) -> None:
        await self.client.close()
        await self.rt.close()

    async def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return await self.client.post(PREFIX + path, json=json, **kw)

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.client.get(PREFIX + path, **kw)

    def unique_email(self, tag: str = "user") -> str:
        self._n += 1
        return f"{tag}{self._n}-{self.settings.mongo_db}@example.com"

    async def register(self, org: str = "Acme", email: str | None = None) -> Account:
        """Register an owner: with e-mail verification on (the default), through the link's token read from
        the outbox, as the notification service would mail it."""
        email = email or self.unique_email("owner")
        resp = await self.post(
            "/register", {"email": email, "password": GOOD_PASSWORD, "name": "Olive Owner", "organization": org}
        )
        if self.settings.registration_email_verification:
            assert resp.status == 202, await resp.text()
            token = await self.verification_token(email)
            resp = await self.post("/register/verify", {"token": token, "password": GOOD_PASSWORD})
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        acct = Account(email, GOOD_PASSWORD, body["user"]["id"], body["organization"]["id"])
        await self.login(acct)
        return acct

    async def verification_token(self, email: str) -> str:
        """The token of the newest verification mail requested for ``email``."""
        events = [
            e for e in await self.events("registration.verification_requested") if e["data"]["email"] == email.lower()
        ]
        assert events, f"no verification requested for {email}"
        return str(events[-1]["data"]["token"])

    async def login(self, acct: Account) -> dict[str, Any]:
        resp = await self.post("/login", {"email": acct.email, "password": acct.password})
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        if "access_token" in body:
            acct.access, acct.refresh = body["access_token"], body["refresh_token"]
        return body

    async def invite_and_join(self, inviter: Account, role: str = "member") -> Account:
        email = self.unique_email(role)
        resp = await self.post("/invites", {"email": email, "role": role}, headers=inviter.auth)
        assert resp.status == 201, await resp.text()
        token = await self.invite_token(resp_json=await resp.json())
        resp = await self.post("/invites/accept", {"token": token, "name": "Ivy Invitee", "password": GOOD_PASSWORD})
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        acct = Account(email, GOOD_PASSWORD, body["user"]["id"], body["organization"]["id"])
        await self.login(acct)
        return acct

    async def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        """Events waiting in the outbox of this app's database (no relay runs in the api role), as
        ``{type, org_id, subject, data}`` with ``data`` decoded."""
        query = {"type": type_} if type_ else {}
        docs = await self.rt.db["outbox"].find(query).sort("_id", 1).to_list(1000)
        return [
            {
                "type": d["fields"]["type"],
                "org_id": d["fields"].get("org_id", ""),
                "subject": d["fields"].get("subject", ""),
                "data": json.loads(d["fields"]["data"]),
                "fields": d["fields"],
            }
            for d in docs
        ]

    async def invite_token(self, resp_json: dict[str, Any]) -> str:
        [event] = [
            e for e in await self.events("invite.delivery_requested") if e["data"]["invite_id"] == resp_json["id"]
        ]
        return str(event["data"]["token"])

    async def enable_mfa(self, acct: Account) -> None:
        resp = await self.post("/mfa/setup", headers=acct.auth)
        assert resp.status == 200, await resp.text()
        acct.totp_secret = secret_of((await resp.json())["otpauth_uri"])
        resp = await self.post("/mfa/enable", {"code": code_at(acct.totp_secret, 0)}, headers=acct.auth)
        assert resp.status == 200, await resp.text()
        acct.recovery_codes = (await resp.json())["recovery_codes"]


def secret_of(uri: str) -> str:
    return parse_qs(urlparse(uri).query)["secret"][0]


def code_at(secret: str, steps: int) -> str:
    """The TOTP code ``steps`` time steps from now."""
    return str(pyotp.TOTP(secret).at(time.time() + 30 * steps))


async def start_app(redis_url: str, mongo_url: str, name: str, **overrides: Any) -> AuthApp:
    port = free_port()
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "mongo_url": mongo_url,
        "mongo_db": name,
        "http_host": "127.0.0.1",
        "http_port": port,
        "auth_encryption_keys": TEST_KEY,
        "auth_jwks_url": f"http://127.0.0.1:{port}{PREFIX}/.well-known/jwks.json",
        **FAST,
        **GENEROUS_LIMITS,
    }
    values.update(overrides)
    settings = AuthSettings(**values)
    rt = Runtime(settings, "api")
    spec = ServiceSpec(name="auth", settings_cls=AuthSettings, api=bootstrap.api)
    routes, _workers = await compose(spec, rt)
    services = await bootstrap.services(rt)
    app = create_app(
        settings=settings,
        metrics=rt.metrics,
        health=rt.health,
        tracer=rt.tracer,
        routes=routes,
        limiter=rt.limiter,
        authenticator=rt.tokens.authenticate,
    )
    from novapulse_runtime.health import ProcessState

    rt.health.state = ProcessState.READY
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1", port=port))
    await client.start_server()
    return AuthApp(client, rt, settings, f"http://127.0.0.1:{port}", services)
