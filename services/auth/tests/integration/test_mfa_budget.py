"""The per-user MFA wrong-code budget (issue 11 §1): 10 wrong codes per 15 minutes across every challenge and
code route, kept on the user's document in MongoDB — a Redis ``FLUSHALL`` does not lift it — and taken before
each code is checked, so parallel wrong codes cannot overshoot it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from helpers_auth import GOOD_PASSWORD, Account, AuthApp, code_at
from redis.asyncio import Redis

from novapulse_auth.constants import MFA_USER_FAILURE_WINDOW, MFA_USER_MAX_FAILURES

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_redis(server_factory: Callable[..., Any]) -> str:
    return f"redis://127.0.0.1:{server_factory('redis').port}/0"


async def _challenge(app: AuthApp, acct: Account) -> str:
    body = await app.login(acct)
    assert body["mfa_required"] is True
    return str(body["mfa_token"])


async def _verify(app: AuthApp, token: str, **answer: object) -> Any:
    return await app.post("/mfa/verify", {"mfa_token": token, **answer})


def _wrong(acct: Account) -> str:
    """A code that no step near now produces (so it stays wrong for the whole test)."""
    near = {code_at(acct.totp_secret, steps) for steps in range(-3, 4)}
    return next(c for c in (f"{n:06d}" for n in range(1000)) if c not in near)


async def _budget(app: AuthApp, acct: Account) -> tuple[int, float]:
    doc = await app.rt.db["users"].find_one({"_id": acct.user_id, "org_id": acct.org_id})
    assert doc is not None
    return int(doc["mfa_failures"]), float(doc["mfa_failures_since_ts"])


async def _spend_budget(app: AuthApp, acct: Account) -> None:
    """MFA_USER_MAX_FAILURES wrong codes, 5 per challenge (a challenge dies after 5)."""
    wrong = _wrong(acct)
    spent = 0
    while spent < MFA_USER_MAX_FAILURES:
        token = await _challenge(app, acct)
        for _ in range(min(5, MFA_USER_MAX_FAILURES - spent)):
            resp = await _verify(app, token, code=wrong)
            assert resp.status == 401, await resp.text()
            spent += 1


async def test_wrong_codes_lock_the_user_and_a_redis_flush_does_not_lift_it(
    make_app: Callable[..., Any], fresh_redis: str
) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis)
    owner = await app.register()
    await app.enable_mfa(owner)
    await _spend_budget(app, owner)
    assert (await _budget(app, owner))[0] == MFA_USER_MAX_FAILURES
    # The event keeps its per-challenge `attempts`.
    failed = await app.events("mfa.challenge_failed")
    assert [e["data"]["attempts"] for e in failed] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]

    good = code_at(owner.totp_secret, 1)
    resp = await _verify(app, await _challenge(app, owner), code=good)  # locked: even the right code
    assert resp.status == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= MFA_USER_FAILURE_WINDOW

    redis = Redis.from_url(fresh_redis)
    try:
        assert await redis.flushall()
        assert await redis.dbsize() == 0
    finally:
        await redis.aclose()

    resp = await _verify(app, await _challenge(app, owner), code=good)
    assert resp.status == 429, await resp.text()
    assert 1 <= int(resp.headers["Retry-After"]) <= MFA_USER_FAILURE_WINDOW
    resp = await app.post("/mfa/recovery-codes", {"code": good}, headers=owner.auth)  # every code route
    assert resp.status == 429
    resp = await _verify(app, await _challenge(app, owner), recovery_code=owner.recovery_codes[0])
    assert resp.status == 429
    assert (await _budget(app, owner))[0] == MFA_USER_MAX_FAILURES  # refused checks count nothing more
    assert not await app.rt.db["recovery_codes"].count_documents({"user_id": owner.user_id, "used_at": {"$ne": None}})


async def test_parallel_wrong_codes_never_exceed_the_limit(app: AuthApp) -> None:
    owner = await app.register()
    await app.enable_mfa(owner)
    wrong = _wrong(owner)
    tokens = [await _challenge(app, owner) for _ in range(4)]
    # All at once: 4 challenges x 5 wrong codes, 6 wrong codes on /mfa/recovery-codes and 6 wrong passwords on
    # /mfa/disable (argon2 keeps those in flight for a while: checking the budget before and counting after
    # would let every one of them through). 32 checks, budget 10.
    requests = [_verify(app, t, code=wrong) for t in tokens for _ in range(5)]
    requests += [app.post("/mfa/recovery-codes", {"code": wrong}, headers=owner.auth) for _ in range(6)]
    disable = {"password": "Not-the-password-1", "code": code_at(owner.totp_secret, 1)}
    requests += [app.post("/mfa/disable", disable, headers=owner.auth) for _ in range(6)]
    statuses = [resp.status for resp in await asyncio.gather(*requests)]
    checked = [s for s in statuses if s != 429]
    assert len(checked) == MFA_USER_MAX_FAILURES, statuses
    assert set(checked) <= {400, 401}, statuses
    assert statuses.count(429) == len(requests) - MFA_USER_MAX_FAILURES
    assert (await _budget(app, owner))[0] == MFA_USER_MAX_FAILURES
    assert len(await app.events("mfa.challenge_failed")) == statuses[:20].count(401)
    resp = await _verify(app, await _challenge(app, owner), code=code_at(owner.totp_secret, 1))
    assert resp.status == 429


async def test_a_right_code_after_the_window_works(app: AuthApp) -> None:
    owner = await app.register()
    await app.enable_mfa(owner)
    await _spend_budget(app, owner)
    good = code_at(owner.totp_secret, 1)
    assert (await _verify(app, await _challenge(app, owner), code=good)).status == 429
    # The window's end, without waiting 15 minutes: its start moves back by one window.
    _, since = await _budget(app, owner)
    await app.rt.db["users"].update_one(
        {"_id": owner.user_id}, {"$set": {"mfa_failures_since_ts": since - MFA_USER_FAILURE_WINDOW}}
    )
    resp = await _verify(app, await _challenge(app, owner), code=good)
    assert resp.status == 200, await resp.text()
    assert (await _budget(app, owner))[0] == 0  # the right code gave its slot back
    # A new wrong code starts a new window of its own.
    resp = await _verify(app, await _challenge(app, owner), code=_wrong(owner))
    assert resp.status == 401
    failures, new_since = await _budget(app, owner)
    assert failures == 1
    assert new_since > since


async def test_only_wrong_answers_count_and_a_right_one_resets_nothing(app: AuthApp) -> None:
    owner = await app.register()
    await app.enable_mfa(owner)
    token = await _challenge(app, owner)
    for _ in range(3):
        assert (await _verify(app, token, code=_wrong(owner))).status == 401
    assert (await _verify(app, token, code=code_at(owner.totp_secret, 1))).status == 200
    assert (await _budget(app, owner))[0] == 3
    assert (await _verify(app, await _challenge(app, owner), recovery_code=owner.recovery_codes[0])).status == 200
    assert (await _budget(app, owner))[0] == 3
    resp = await app.post(
        "/mfa/disable", {"password": "Not-the-password-1", "code": code_at(owner.totp_secret, 1)}, headers=owner.auth
    )
    assert resp.status == 400  # a wrong password on /mfa/disable counts too
    assert (await _budget(app, owner))[0] == 4
    resp = await app.post("/mfa/disable", {"password": GOOD_PASSWORD, "code": _wrong(owner)}, headers=owner.auth)
    assert resp.status == 400  # right password (slot given back), wrong code (kept)
    assert (await _budget(app, owner))[0] == 5


async def test_the_budget_is_scoped_by_organisation(app: AuthApp) -> None:
    owner = await app.register()
    other = await app.register()
    repo = app.services.repo
    assert await repo.reserve_mfa_attempt(other.org_id, owner.user_id, limit=10, window=900, now_ts=1e9) is None
    doc = await app.rt.db["users"].find_one({"_id": owner.user_id})
    assert doc is not None
    assert "mfa_failures" not in doc
    attempt = await repo.reserve_mfa_attempt(owner.org_id, owner.user_id, limit=10, window=900, now_ts=1e9)
    assert attempt is not None
    assert (attempt.reserved, attempt.window_start, attempt.failures) == (True, 1e9, 1)
    await repo.release_mfa_attempt(other.org_id, owner.user_id, attempt.window_start)  # another org's: no effect
    assert (await _budget(app, owner))[0] == 1
    await repo.release_mfa_attempt(owner.org_id, owner.user_id, attempt.window_start)
    assert (await _budget(app, owner))[0] == 0
