"""The shared access-token verifier refuses every forgery it is meant to refuse."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from novapulse_devkit.testing import TokenIssuer, wait_until
from novapulse_runtime.problems import ProblemError
from novapulse_runtime.tokens import JWKS_ATTEMPTS, JWKS_FETCH_BUDGET, JWKS_FIRST_PAUSE, TokenVerifier

pytestmark = pytest.mark.integration


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(issuer: TokenIssuer, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    c = {
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "sub": "u1",
        "org": "o1",
        "role": "admin",
        "amr": ["pwd"],
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    c.update(over)
    return c


@pytest.fixture
def verifier(token_issuer: TokenIssuer) -> TokenVerifier:
    return TokenVerifier(token_issuer.jwks_url, issuer=token_issuer.issuer, audience=token_issuer.audience)


async def _refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(ProblemError) as info:
        await verifier.verify(token)
    assert info.value.status == 401
    return info.value.detail or ""


async def test_valid_token_and_jwks_cache(verifier: TokenVerifier, token_issuer: TokenIssuer) -> None:
    who = await verifier.verify(token_issuer.mint("u1", "o1", "admin", amr=("pwd", "otp")))
    assert (who.user_id, who.org_id, who.role, who.amr) == ("u1", "o1", "admin", ("pwd", "otp"))
    await verifier.close()


async def test_forgeries_refused(verifier: TokenVerifier, token_issuer: TokenIssuer) -> None:
    good = token_issuer.mint("u1", "o1")
    head, body, _sig = good.split(".")
    # alg=none
    none_header = _b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": token_issuer.kid}).encode())
    assert "algorithm" in await _refused(verifier, f"{none_header}.{body}.")
    # HS256 signed with the public key as the HMAC secret
    public_pem = token_issuer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_head = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": token_issuer.kid}).encode())
    hs_body = _b64(json.dumps(_claims(token_issuer)).encode())
    mac = hmac.new(public_pem, f"{hs_head}.{hs_body}".encode(), hashlib.sha256).digest()
    assert "algorithm" in await _refused(verifier, f"{hs_head}.{hs_body}.{_b64(mac)}")
    # keys offered by the token itself
    rogue = generate_private_key(public_exponent=65537, key_size=2048)
    for extra in ({"jku": "http://evil.example/jwks"}, {"jwk": {"kty": "RSA"}}):
        forged = jwt.encode(
            _claims(token_issuer), rogue, algorithm="RS256", headers={"kid": token_issuer.kid, "typ": "at+jwt", **extra}
        )
        await _refused(verifier, forged)
    # RS256 with a rogue key under our kid: algorithm does not match the key
    forged = jwt.encode(
        _claims(token_issuer), rogue, algorithm="RS256", headers={"kid": token_issuer.kid, "typ": "at+jwt"}
    )
    await _refused(verifier, forged)
    # tampered payload
    tampered = _b64(json.dumps(_claims(token_issuer, role="owner")).encode())
    await _refused(verifier, f"{head}.{tampered}.{_sig}")
    # wrong audience, wrong issuer, wrong typ, expired, not yet valid, missing org, unknown kid
    await _refused(verifier, token_issuer.mint("u1", "o1", aud="other"))
    await _refused(verifier, token_issuer.mint("u1", "o1", iss="someone-else"))
    refresh_typ = jwt.encode(
        _claims(token_issuer),
        token_issuer.private_key,
        algorithm="EdDSA",
        headers={"kid": token_issuer.kid, "typ": "JWT"},
    )
    assert "access token" in await _refused(verifier, refresh_typ)
    await _refused(verifier, token_issuer.mint("u1", "o1", ttl=-60))
    await _refused(verifier, token_issuer.mint("u1", "o1", nbf=int(time.time()) + 600))
    no_org = _claims(token_issuer)
    del no_org["org"]
    await _refused(
        verifier,
        jwt.encode(
            no_org, token_issuer.private_key, algorithm="EdDSA", headers={"kid": token_issuer.kid, "typ": "at+jwt"}
        ),
    )
    unknown = jwt.encode(
        _claims(token_issuer), token_issuer.private_key, algorithm="EdDSA", headers={"kid": "nope", "typ": "at+jwt"}
    )
    assert "Unknown" in await _refused(verifier, unknown)
    for garbage in ("", "a.b", "x" * 9000, "...", "a.b.c"):
        await _refused(verifier, garbage)
    await verifier.close()


@contextlib.asynccontextmanager
async def _jwks_server(answers: list[int], jwks: dict[str, Any]) -> AsyncIterator[tuple[str, list[int]]]:
    """A JWKS endpoint on 127.0.0.1 answering with each status of ``answers`` in turn (the last one for ever
    after); 200 serves ``jwks``. Yields its URL and the statuses it answered."""
    served: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        status = answers[min(len(served), len(answers) - 1)]
        served.append(status)
        if status == 200:
            return web.json_response(jwks)
        return web.Response(status=status, text="unavailable")

    app = web.Application()
    app.router.add_get("/jwks.json", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/jwks.json", served
    finally:
        await runner.cleanup()


async def test_a_transient_jwks_failure_is_retried_in_process() -> None:
    issuer = TokenIssuer()
    async with _jwks_server([503, 200], issuer.jwks) as (url, served):
        verifier = TokenVerifier(url, issuer=issuer.issuer, audience=issuer.audience)
        try:
            started = time.monotonic()
            who = await verifier.verify(issuer.mint("u1", "o1"))
            elapsed = time.monotonic() - started
        finally:
            await verifier.close()
    assert who.user_id == "u1"
    assert served == [503, 200]
    assert JWKS_FIRST_PAUSE * 0.9 <= elapsed < JWKS_FETCH_BUDGET


async def test_a_jwks_that_keeps_failing_refuses_the_token_within_the_bound() -> None:
    issuer = TokenIssuer()
    async with _jwks_server([503], issuer.jwks) as (url, served):
        verifier = TokenVerifier(url, issuer=issuer.issuer, audience=issuer.audience)
        try:
            started = time.monotonic()
            detail = await _refused(verifier, issuer.mint("u1", "o1"))
            elapsed = time.monotonic() - started
        finally:
            await verifier.close()
    assert detail == "Unknown signing key"
    assert served == [503] * JWKS_ATTEMPTS
    assert elapsed < JWKS_FETCH_BUDGET + 0.5


async def test_an_unreachable_jwks_refuses_the_token_within_the_bound() -> None:
    issuer = TokenIssuer()
    async with _jwks_server([200], issuer.jwks) as (url, _served):
        pass  # the port is closed again: connections are refused
    verifier = TokenVerifier(url, issuer=issuer.issuer, audience=issuer.audience)
    try:
        started = time.monotonic()
        detail = await _refused(verifier, issuer.mint("u1", "o1"))
        elapsed = time.monotonic() - started
    finally:
        await verifier.close()
    assert detail == "Unknown signing key"
    assert elapsed < JWKS_FETCH_BUDGET + 0.5


async def test_a_remembered_token_is_refused_once_it_expires() -> None:
    """A verified token is remembered, and refused again as soon as its ``exp`` passes (leeway 0 here)."""
    issuer = TokenIssuer()
    verifier = TokenVerifier(
        "http://127.0.0.1:9/jwks.json",
        issuer=issuer.issuer,
        audience=issuer.audience,
        leeway=0,
        static_jwks=issuer.jwks,
    )
    token = issuer.mint("u1", "o1", ttl=2)
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # remembered: the same principal, no second verification
    refusals: list[str] = []

    async def refused() -> bool:
        try:
            await verifier.verify(token)
        except ProblemError as exc:
            refusals.append(exc.detail or "")
            return True
        return False

    await wait_until(refused, timeout=10, message="the expired token refused")
    assert refusals == ["Invalid token: ExpiredSignatureError"]
    await verifier.close()


async def test_a_remembered_token_is_refused_once_its_key_leaves_the_jwks() -> None:
    """Key rotation: a token verified with a key the refetched JWKS no longer holds is refused, although the
    verifier remembered it."""
    old, new = TokenIssuer(), TokenIssuer()
    jwks = dict(old.jwks)
    async with _jwks_server([200], jwks) as (url, _served):
        verifier = TokenVerifier(url, issuer=old.issuer, audience=old.audience, min_refresh_interval=0)
        try:
            token = old.mint("u1", "o1")
            assert (await verifier.verify(token)).user_id == "u1"
            jwks["keys"] = new.jwks["keys"]  # the auth service dropped the old key
            assert (await verifier.verify(new.mint("u2", "o1"))).user_id == "u2"  # unknown kid: refetched
            assert await _refused(verifier, token) == "Unknown signing key"
        finally:
            await verifier.close()
