"""The auth service as real processes (api + worker), driven over HTTP, with its events read from the stream:
an owner registers, invites a colleague, both log in, the colleague turns MFA on and logs in with the app
and with a recovery code, and another service trusts the tokens through the JWKS alone."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
from helpers_auth import GOOD_PASSWORD, TEST_KEY, code_at, secret_of
from redis.asyncio import Redis

from novapulse_devkit.testing import wait_until
from novapulse_runtime.catalog import CATALOG
from novapulse_runtime.tokens import TokenVerifier

P = "/api/v1/auth"


async def test_owner_invites_colleague_who_turns_on_mfa(spawn: Callable[..., Any], names: str, redis_url: str) -> None:
    env = {"AUTH_ENCRYPTION_KEYS": TEST_KEY, "EVENTS_NAMESPACE": names, "LOGIN_ACCOUNT_LIMIT": "100"}
    api = spawn("novapulse_auth", "api", env=env, start=False)
    api.env["AUTH_JWKS_URL"] = f"{api.url}{P}/.well-known/jwks.json"
    api.start()
    worker = spawn("novapulse_auth", "worker", env={**env, "AUTH_JWKS_URL": api.env["AUTH_JWKS_URL"]})
    async with aiohttp.ClientSession(api.url) as http:
        for proc in (api, worker):
            async with http.get(f"{proc.url}/api/v1/health/ready") as resp:
                assert resp.status == 200

        async def call(method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.request(method, P + path, json=body, headers=headers) as resp:
                return resp.status, (await resp.json() if resp.status != 204 else None)

        # Registration completes through the mailed link: its token travels on the stream (a private command).
        redis = Redis.from_url(redis_url, decode_responses=True)
        stream = f"{names}:events:auth"
        status, accepted = await call(
            "POST",
            "/register",
            {"email": "owner@acme.example.com", "password": GOOD_PASSWORD, "name": "Olive", "organization": "Acme"},
        )
        assert status == 202, accepted
        requested: list[str] = []

        async def verification_requested() -> bool:
            requested[:] = [
                json.loads(f["data"])["token"]
                for _, f in await redis.xrange(stream)
                if f["type"] == "registration.verification_requested"
            ]
            return bool(requested)

        await wait_until(verification_requested, timeout=20, message="registration.verification_requested")
        status, reg = await call("POST", "/register/verify", {"token": requested[0], "password": GOOD_PASSWORD})
        assert status == 201, reg
        status, owner = await call("POST", "/login", {"email": "owner@acme.example.com", "password": GOOD_PASSWORD})
        assert status == 200
        status, invite = await call("POST", "/invites", {"email": "colleague@acme.example.com"}, owner["access_token"])
        assert status == 201, invite

        # The worker relays the outbox to the stream: the private commands carry the tokens, nothing else does.
        entries: list[tuple[str, dict[str, str]]] = []

        async def delivered() -> bool:
            entries[:] = await redis.xrange(stream)
            return any(f["type"] == "invite.delivery_requested" for _, f in entries)

        await wait_until(delivered, timeout=20, message="invite.delivery_requested on the stream")
        by_type = {f["type"]: f for _, f in entries}
        assert {"user.registered", "user.invited", "invite.delivery_requested"} <= set(by_type)
        token = json.loads(by_type["invite.delivery_requested"]["data"])["token"]
        for _, fields in entries:
            et = CATALOG.lookup(fields["type"])
            assert et is not None
            if et.public:
                assert token not in json.dumps(fields)
                assert requested[0] not in json.dumps(fields)
                assert "token" not in json.loads(fields["data"])
        assert by_type["user.invited"]["org_id"] == reg["organization"]["id"]

        status, joined = await call(
            "POST", "/invites/accept", {"token": token, "name": "Cole", "password": GOOD_PASSWORD}
        )
        assert status == 201, joined
        status, colleague = await call(
            "POST", "/login", {"email": "colleague@acme.example.com", "password": GOOD_PASSWORD}
        )
        assert status == 200
        status, me = await call("GET", "/me", token=colleague["access_token"])
        assert status == 200
        assert me["organization"]["id"] == reg["organization"]["id"]
        assert me["user"]["role"] == "member"

        # MFA with an authenticator app (the secret read from the otpauth URI, as a phone would from the QR).
        status, setup = await call("POST", "/mfa/setup", token=colleague["access_token"])
        assert status == 200
        secret = secret_of(setup["otpauth_uri"])
        status, enabled = await call("POST", "/mfa/enable", {"code": code_at(secret, 0)}, colleague["access_token"])
        assert status == 200
        status, challenge = await call(
            "POST", "/login", {"email": "colleague@acme.example.com", "password": GOOD_PASSWORD}
        )
        assert challenge["mfa_required"] is True
        status, tokens = await call(
            "POST", "/mfa/verify", {"mfa_token": challenge["mfa_token"], "code": code_at(secret, 1)}
        )
        assert status == 200, tokens
        status, challenge = await call(
            "POST", "/login", {"email": "colleague@acme.example.com", "password": GOOD_PASSWORD}
        )
        status, tokens = await call(
            "POST",
            "/mfa/verify",
            {"mfa_token": challenge["mfa_token"], "recovery_code": enabled["recovery_codes"][0]},
        )
        assert status == 200, tokens

        # Another service verifies the token from the JWKS alone.
        verifier = TokenVerifier(api.env["AUTH_JWKS_URL"], issuer="novapulse-auth", audience="novapulse")
        try:
            who = await verifier.verify(tokens["access_token"])
            assert who.user_id == joined["user"]["id"]
            assert "mfa" in who.amr
        finally:
            await verifier.close()

        async with http.get(f"{P}/openapi.json") as resp:
            doc = await resp.json()
        assert {"/api/v1/auth/login", "/api/v1/auth/mfa/verify", "/api/v1/auth/.well-known/jwks.json"} <= set(
            doc["paths"]
        )

        async def mfa_enabled_published() -> bool:
            return any(f["type"] == "mfa.enabled" for _, f in await redis.xrange(stream))

        await wait_until(mfa_enabled_published, timeout=20, message="mfa.enabled on the stream")
        await redis.aclose()
    for proc in (api, worker):
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
