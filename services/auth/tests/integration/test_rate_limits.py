"""Rate limits (the shared limiter): log-in per IP and per account, register per IP, invites per
organisation, MFA verify per user; 429 with Retry-After; X-Forwarded-For only from trusted proxies.

Each test runs against its own redis-server so its buckets start empty whatever else ran."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helpers_auth import GOOD_PASSWORD, AuthApp, code_at


@pytest.fixture
def fresh_redis(server_factory: Callable[..., Any]) -> str:
    return f"redis://127.0.0.1:{server_factory('redis').port}/0"


async def _login(app: AuthApp, email: str, xff: str | None = None) -> Any:
    headers = {"X-Forwarded-For": xff} if xff else {}
    return await app.post("/login", {"email": email, "password": "Wrong-password-1"}, headers=headers)


async def test_login_per_ip_and_forged_forwarded_for(make_app: Callable[..., Any], fresh_redis: str) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, login_ip_limit=3)
    statuses = [(await _login(app, f"a{i}@example.com", xff=f"203.0.113.{i}")).status for i in range(4)]
    assert statuses == [401, 401, 401, 429]  # X-Forwarded-For from an untrusted peer changes nothing
    resp = await _login(app, "z@example.com")
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.content_type == "application/problem+json"


async def test_forwarded_for_is_honoured_from_a_trusted_proxy(make_app: Callable[..., Any], fresh_redis: str) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, login_ip_limit=2, trusted_proxies="127.0.0.1/32")
    assert [(await _login(app, f"b{i}@example.com", xff="198.51.100.7")).status for i in range(3)] == [401, 401, 429]
    assert (await _login(app, "c@example.com", xff="198.51.100.8")).status == 401  # another client


async def test_login_per_account_is_a_ceiling_over_all_clients(make_app: Callable[..., Any], fresh_redis: str) -> None:
    # the per-account budget counts wrong passwords only, from every client together (test_lockout.py: who
    # it holds back); another account is not touched
    app: AuthApp = await make_app(
        redis_url=fresh_redis, login_account_limit=1, login_account_ceiling=2, trusted_proxies="127.0.0.1/32"
    )
    owner = await app.register()
    statuses = [(await _login(app, owner.email.upper(), xff=f"192.0.2.{i}")).status for i in range(3)]
    assert statuses == [401, 401, 429]
    assert (await _login(app, "someone-else@example.com", xff="192.0.2.50")).status == 401


async def test_register_per_ip(make_app: Callable[..., Any], fresh_redis: str) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, register_ip_limit=2)
    statuses = []
    for _ in range(3):
        resp = await app.post(
            "/register", {"email": app.unique_email(), "password": GOOD_PASSWORD, "name": "N", "organization": "O"}
        )
        statuses.append(resp.status)
    assert statuses == [202, 202, 429]


async def test_register_per_address(make_app: Callable[..., Any], fresh_redis: str) -> None:
    # keyed on the mailbox (lower case, no +tag): counted before the look-up, so new and registered
    # addresses run out alike and the 429 tells nothing
    app: AuthApp = await make_app(redis_url=fresh_redis, register_email_limit=2)
    owner = await app.register()
    local, _, domain = owner.email.partition("@")
    statuses = []
    for address in (owner.email.upper(), f"{local}+x@{domain}", f"{local}+y@{domain}"):
        resp = await app.post(
            "/register", {"email": address, "password": GOOD_PASSWORD, "name": "N", "organization": "O"}
        )
        statuses.append(resp.status)
    assert statuses == [202, 429, 429]  # the owner's own registration spent one
    new = app.unique_email("new")
    for expected in (202, 202, 429):
        resp = await app.post("/register", {"email": new, "password": GOOD_PASSWORD, "name": "N", "organization": "O"})
        assert resp.status == expected


async def test_invites_per_organisation(make_app: Callable[..., Any], fresh_redis: str) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, invite_org_limit=2)
    owner_a = await app.register("A")
    owner_b = await app.register("B")
    statuses = [
        (await app.post("/invites", {"email": app.unique_email()}, headers=owner_a.auth)).status for _ in range(3)
    ]
    assert statuses == [201, 201, 429]
    assert (await app.post("/invites", {"email": app.unique_email()}, headers=owner_b.auth)).status == 201


async def test_invites_per_recipient_across_organisations(make_app: Callable[..., Any], fresh_redis: str) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, invite_recipient_limit=2)
    owner_a = await app.register("A")
    owner_b = await app.register("B")
    victim = app.unique_email("victim")
    local, _, domain = victim.partition("@")
    assert (await app.post("/invites", {"email": victim}, headers=owner_a.auth)).status == 201
    assert (await app.post("/invites", {"email": f"{local}+1@{domain}"}, headers=owner_a.auth)).status == 201
    # the same mailbox, from another organisation and in other spellings: the budget is spent
    for address in (victim.upper(), f"{local}+2@{domain}"):
        resp = await app.post("/invites", {"email": address}, headers=owner_b.auth)
        assert resp.status == 429
        assert resp.content_type == "application/problem+json"
        assert int(resp.headers["Retry-After"]) >= 1
    assert (await app.post("/invites", {"email": app.unique_email()}, headers=owner_b.auth)).status == 201


async def test_members_cannot_spend_the_organisations_invite_budget(
    make_app: Callable[..., Any], fresh_redis: str
) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, invite_org_limit=3)
    owner = await app.register()
    member = await app.invite_and_join(owner)  # spends 1
    for _ in range(3):
        assert (await app.post("/invites", {"email": app.unique_email()}, headers=member.auth)).status == 403
    statuses = [
        (await app.post("/invites", {"email": app.unique_email()}, headers=owner.auth)).status for _ in range(3)
    ]
    assert statuses == [201, 201, 429]


async def test_mfa_verify_per_user(make_app: Callable[..., Any], fresh_redis: str) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, mfa_verify_user_limit=3)
    owner = await app.register()
    await app.enable_mfa(owner)
    good = code_at(owner.totp_secret, 1)
    wrong = f"{(int(good) + 3) % 1_000_000:06d}"
    statuses = []
    for _ in range(4):  # a fresh challenge each time: the limit follows the user, not the token
        token = (await app.login(owner))["mfa_token"]
        statuses.append((await app.post("/mfa/verify", {"mfa_token": token, "code": wrong})).status)
    assert statuses == [401, 401, 401, 429]


async def test_mfa_code_routes_per_user(make_app: Callable[..., Any], fresh_redis: str) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, mfa_verify_user_limit=3)
    owner = await app.register()
    await app.enable_mfa(owner)  # spends one of the 3 on /mfa/enable
    wrong = f"{(int(code_at(owner.totp_secret, 0)) + 3) % 1_000_000:06d}"
    statuses = []
    for _ in range(3):
        resp = await app.post("/mfa/recovery-codes", {"code": wrong}, headers=owner.auth)
        statuses.append(resp.status)
    assert statuses[-1] == 429
    assert statuses[:2] == [statuses[0]] * 2
    assert statuses[0] in (400, 401, 403, 422)
