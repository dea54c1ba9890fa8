"""Across processes with the real auth service: registering, inviting and turning MFA on produce the expected
mails in a real SMTP server; the invitation's link carries a token that really accepts the invite through
auth; auth's own access tokens open the notification API (JWKS)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import aiohttp
import pyotp
import pytest
from cryptography.fernet import Fernet
from helpers_notification import SmtpSink

from novapulse_devkit.testing import start_together, wait_until

pytestmark = pytest.mark.e2e

AUTH = "/api/v1/auth"
NOTE = "/api/v1/notifications"
PASSWORD = "Correct-Horse-Battery-9"
PUBLIC = "https://app.example.test"


async def test_register_invite_accept_and_mfa_through_the_auth_service(
    spawn, sink: SmtpSink, names: str, tmp_path
) -> None:
    auth_env = {
        "AUTH_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "EVENTS_NAMESPACE": names,
        "REGISTRATION_EMAIL_VERIFICATION": "false",  # registration is not under test here: immediate 201
    }
    auth_api = spawn("novapulse_auth", "api", env=auth_env, start=False)
    jwks = f"{auth_api.url}{AUTH}/.well-known/jwks.json"
    auth_api.env["AUTH_JWKS_URL"] = jwks
    auth_api.start()
    spawn("novapulse_auth", "worker", env={**auth_env, "AUTH_JWKS_URL": jwks})
    note_env = {
        **sink.env(),
        "AUTH_JWKS_URL": jwks,
        "EVENTS_NAMESPACE": names,
        "PUBLIC_BASE_URL": PUBLIC,
        "MAIL_CATCHER_DIR": str(tmp_path / "mail"),
    }
    worker = spawn("novapulse_notification", "worker", env=note_env, start=False)
    note_api = spawn("novapulse_notification", "api", env=note_env, start=False)
    start_together([worker, note_api])

    async with aiohttp.ClientSession() as http:

        async def call(method: str, url: str, body: object = None, token: str | None = None) -> tuple[int, dict]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.request(method, url, json=body, headers=headers) as resp:
                return resp.status, (await resp.json(content_type=None) if resp.status != 204 else {})

        a = auth_api.url + AUTH
        status, reg = await call(
            "POST",
            f"{a}/register",
            {"email": "olive@acme.example.com", "password": PASSWORD, "name": "Olive", "organization": "Acme"},
        )
        assert status == 201, reg
        status, owner = await call("POST", f"{a}/login", {"email": "olive@acme.example.com", "password": PASSWORD})
        assert status == 200, owner
        status, invite = await call("POST", f"{a}/invites", {"email": "cole@acme.example.com"}, owner["access_token"])
        assert status == 201, invite

        await wait_until(
            lambda: len(sink.to("cole@acme.example.com")) == 1, timeout=40, interval=0.1, message="the invitation mail"
        )
        [welcome] = sink.to("olive@acme.example.com")
        assert welcome.message["Subject"] == "Welcome to NovaPulse, Olive"
        [mail] = sink.to("cole@acme.example.com")
        assert mail.message["Subject"] == "Olive invited you to join Acme on NovaPulse"
        link = re.search(r"https://\S+", mail.text)
        assert link is not None
        assert link.group(0).startswith(f"{PUBLIC}/invite/accept?token=")
        token = parse_qs(urlparse(link.group(0)).query)["token"][0]
        assert f'href="{link.group(0)}"' in mail.html.replace("&amp;", "&")

        status, joined = await call(
            "POST", f"{a}/invites/accept", {"token": token, "name": "Cole", "password": PASSWORD}
        )
        assert status == 201, joined
        await wait_until(
            lambda: any(
                m.message["Subject"] == "Cole joined your organisation" for m in sink.to("olive@acme.example.com")
            ),
            timeout=40,
            interval=0.1,
            message="the inviter's notice",
        )

        status, cole = await call("POST", f"{a}/login", {"email": "cole@acme.example.com", "password": PASSWORD})
        assert status == 200, cole
        status, setup = await call("POST", f"{a}/mfa/setup", token=cole["access_token"])
        assert status == 200, setup
        secret = parse_qs(urlparse(setup["otpauth_uri"]).query)["secret"][0]
        status, enabled = await call(
            "POST", f"{a}/mfa/enable", {"code": pyotp.TOTP(secret).now()}, cole["access_token"]
        )
        assert status == 200, enabled
        await wait_until(
            lambda: any(
                m.message["Subject"] == "Two-factor authentication turned on" for m in sink.to("cole@acme.example.com")
            ),
            timeout=40,
            interval=0.1,
            message=f"the MFA security notice; log:\n{worker.logs()[-3000:]}",
        )

        # Auth's real access tokens open the notification API; each sees only their own notices.
        n = note_api.url + NOTE
        status, page = await call("GET", f"{n}/notifications", token=owner["access_token"])
        assert status == 200, page
        assert [i["title"] for i in page["items"]] == ["Cole joined your organisation", "Welcome to NovaPulse, Olive"]
        status, page = await call("GET", f"{n}/notifications", token=cole["access_token"])
        assert status == 200, page
        assert [i["title"] for i in page["items"]] == ["Two-factor authentication turned on"]
        status, log = await call("GET", f"{n}/deliveries?channel=email", token=owner["access_token"])
        assert status == 200, log
        assert sorted(d["email"] for d in log["items"]) == [
            "cole@acme.example.com",
            "cole@acme.example.com",
            "olive@acme.example.com",
            "olive@acme.example.com",
        ]
