"""Authority ends when it is taken away (issue 11 §1): disabled or demoted users, logged-out sessions and
changed passwords lose their access tokens in every auth process within the documented window (1 s), their
pending invites die, and a used TOTP code stays used after Redis loses its data.

``replica`` is a second auth API on the same database and Redis: it learns revocations only through the push,
as another service's verifier does."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from helpers_auth import GOOD_PASSWORD, Account, AuthApp, code_at
from redis.asyncio import Redis

from novapulse_auth.errors import AccountChangedDuringLogin
from novapulse_auth.sessions import sync_revocations
from novapulse_devkit.testing import wait_until
from novapulse_runtime.revocation import set_key

WINDOW = 1.0  # the documented revocation window (services/auth/README.md, Revocation)


async def _replica(make_app: Callable[..., Any], app: AuthApp, warm: Account, **overrides: Any) -> AuthApp:
    """A second auth API process on ``app``'s database whose verifier subscription is up."""
    replica: AuthApp = await make_app(mongo_db=app.settings.mongo_db, **overrides)
    assert (await replica.get("/me", headers=warm.auth)).status == 200
    revocations = replica.rt.tokens.revocations
    assert revocations is not None
    await wait_until(lambda: revocations.synced, timeout=5, message="replica subscribed")
    return replica


async def _status(app: AuthApp, path: str, acct: Account) -> int:
    return int((await app.get(path, headers=acct.auth)).status)


async def _refused_within_window(app: AuthApp, acct: Account, path: str = "/me") -> None:
    async def refused() -> bool:
        return await _status(app, path, acct) == 401

    await wait_until(refused, timeout=WINDOW, message=f"token refused on {path}")


async def _invite(app: AuthApp, inviter: Account, role: str = "admin") -> str:
    resp = await app.post("/invites", {"email": app.unique_email("pending"), "role": role}, headers=inviter.auth)
    assert resp.status == 201, await resp.text()
    return await app.invite_token(await resp.json())


async def _accept(app: AuthApp, token: str) -> int:
    resp = await app.post("/invites/accept", {"token": token, "name": "Mallory", "password": GOOD_PASSWORD})
    return int(resp.status)


async def test_disabled_admin_loses_every_power_at_once(app: AuthApp, make_app: Callable[..., Any]) -> None:
    owner = await app.register()
    admin = await app.invite_and_join(owner, "admin")
    member = await app.invite_and_join(owner, "member")
    pending = await _invite(app, admin, "admin")  # sent before the disable
    replica = await _replica(make_app, app, admin)

    resp = await app.post(f"/members/{admin.user_id}/disable", headers=owner.auth)
    assert resp.status == 200, await resp.text()

    # the process that disabled honours it at once; the other one within the window
    assert await _status(app, "/me", admin) == 401
    # /members reads no user status: only the revocation refuses it
    await _refused_within_window(replica, admin, "/members")
    await _refused_within_window(replica, admin)
    for target in (app, replica):
        resp = await target.post("/invites", {"email": app.unique_email(), "role": "admin"}, headers=admin.auth)
        assert resp.status == 401
        resp = await target.post(f"/members/{member.user_id}/disable", headers=admin.auth)
        assert resp.status == 401
    assert (await app.post("/refresh", {"refresh_token": admin.refresh})).status == 401
    # the invite the admin sent before is dead: nobody becomes an admin through it
    assert await _accept(app, pending) == 400
    assert (await app.get("/members", headers=owner.auth)).status == 200
    members = (await (await app.get("/members", headers=owner.auth)).json())["items"]
    assert {m["email"] for m in members} == {owner.email, admin.email, member.email}
    assert next(m for m in members if m["id"] == member.user_id)["status"] == "active"
    # other users are untouched
    assert await _status(replica, "/me", owner) == 200
    assert await _status(replica, "/me", member) == 200


async def test_routes_use_the_callers_current_role_and_status(app: AuthApp) -> None:
    """Before (or without) the push, routes that change anything still see the database's truth."""
    owner = await app.register()
    admin = await app.invite_and_join(owner, "admin")
    member = await app.invite_and_join(owner, "member")
    # changed behind the token's back (another process, or a push not yet arrived): no revocation here
    await app.services.repo.set_role(owner.org_id, admin.user_id, "member")
    assert await _status(app, "/me", admin) == 200  # the token itself is not revoked by this write
    resp = await app.post("/invites", {"email": app.unique_email(), "role": "admin"}, headers=admin.auth)
    assert resp.status == 403
    assert (await app.post(f"/members/{member.user_id}/disable", headers=admin.auth)).status == 403
    assert (await app.post(f"/members/{member.user_id}/mfa/reset", headers=admin.auth)).status == 403
    await app.services.repo.update_user(owner.org_id, admin.user_id, {"role": "admin", "status": "disabled"})
    resp = await app.post("/invites", {"email": app.unique_email(), "role": "admin"}, headers=admin.auth)
    assert resp.status == 401
    assert (await app.post(f"/members/{member.user_id}/disable", headers=admin.auth)).status == 401


async def test_demoted_admin_cannot_invite_and_the_old_token_is_revoked(
    app: AuthApp, make_app: Callable[..., Any]
) -> None:
    owner = await app.register()
    admin = await app.invite_and_join(owner, "admin")
    pending = await _invite(app, admin, "admin")
    old = Account(admin.email, admin.password, admin.user_id, admin.org_id, admin.access, admin.refresh)
    replica = await _replica(make_app, app, admin)

    resp = await app.client.patch(f"/api/v1/auth/members/{admin.user_id}", json={"role": "member"}, headers=owner.auth)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["role"] == "member"

    await _refused_within_window(replica, old, "/members")
    resp = await replica.post("/invites", {"email": app.unique_email(), "role": "admin"}, headers=old.auth)
    assert resp.status == 401
    assert (await app.post("/refresh", {"refresh_token": old.refresh})).status == 401
    assert await _accept(app, pending) == 400
    # logged in again, the member can no longer invite
    await app.login(admin)
    resp = await replica.post("/invites", {"email": app.unique_email(), "role": "member"}, headers=admin.auth)
    assert resp.status == 403
    [changed] = await app.events("user.role_changed")
    assert changed["data"]["role"] == "member"


async def test_invite_of_an_inviter_demoted_behind_its_back_is_refused(app: AuthApp) -> None:
    """Acceptance re-checks the inviter even if the invite escaped the revocation (a race)."""
    owner = await app.register()
    admin = await app.invite_and_join(owner, "admin")
    pending = await _invite(app, admin, "admin")
    await app.services.repo.set_role(owner.org_id, admin.user_id, "member")
    assert await _accept(app, pending) == 400
    [doc] = await app.rt.db["invites"].find({"invited_by": admin.user_id, "role": "admin"}).to_list(10)
    assert doc["status"] == "revoked"


async def test_logout_kills_the_access_token_everywhere(app: AuthApp, make_app: Callable[..., Any]) -> None:
    owner = await app.register()
    other = Account(owner.email, owner.password, owner.user_id, owner.org_id)
    await app.login(other)  # a second session of the same user
    replica = await _replica(make_app, app, owner)

    assert (await app.post("/logout", headers=owner.auth)).status == 204
    assert await _status(app, "/me", owner) == 401
    await _refused_within_window(replica, owner)
    assert (await app.post("/refresh", {"refresh_token": owner.refresh})).status == 401
    assert await _status(replica, "/me", other) == 200  # only that session


async def test_password_change_revokes_the_other_sessions(app: AuthApp, make_app: Callable[..., Any]) -> None:
    owner = await app.register()
    other = Account(owner.email, owner.password, owner.user_id, owner.org_id)
    await app.login(other)
    replica = await _replica(make_app, app, other)
    new_password = "Another-Long-Secret-77"
    resp = await app.post(
        "/password", {"current_password": GOOD_PASSWORD, "new_password": new_password}, headers=owner.auth
    )
    assert resp.status == 204, await resp.text()
    await _refused_within_window(replica, other)
    assert (await app.post("/refresh", {"refresh_token": other.refresh})).status == 401
    assert await _status(replica, "/me", owner) == 200  # the session that changed it stays


async def test_login_racing_a_change_gets_no_session(app: AuthApp) -> None:
    """A log-in that read the user before a demotion does not hand out a token with the old role."""
    owner = await app.register()
    admin = await app.invite_and_join(owner, "admin")
    before = await app.services.repo.user(owner.org_id, admin.user_id)
    assert before is not None
    await app.services.repo.set_role(owner.org_id, admin.user_id, "member")
    with pytest.raises(AccountChangedDuringLogin):
        await app.services.sessions.start(before, ["pwd"])
    live = await app.rt.db["sessions"].count_documents(
        {"user_id": admin.user_id, "revoke_reason": "user-changed-during-login"}
    )
    assert live == 1


async def test_totp_code_stays_used_after_redis_loses_its_data(
    make_app: Callable[..., Any], server_factory: Callable[..., Any]
) -> None:
    server = server_factory("redis")
    url = f"redis://127.0.0.1:{server.port}/0"
    app: AuthApp = await make_app(redis_url=url)
    owner = await app.register()
    await app.enable_mfa(owner)
    code = code_at(owner.totp_secret, 1)
    body = await app.login(owner)
    resp = await app.post("/mfa/verify", {"mfa_token": body["mfa_token"], "code": code})
    assert resp.status == 200, await resp.text()

    client = Redis.from_url(url)
    try:
        assert await client.flushall()
        assert await client.dbsize() == 0
    finally:
        await client.aclose()

    for replay in (code, code_at(owner.totp_secret, 0)):  # the used code and the one that enabled MFA
        body = await app.login(owner)
        resp = await app.post("/mfa/verify", {"mfa_token": body["mfa_token"], "code": replay})
        assert resp.status == 401
    stored = await app.rt.db["users"].find_one({"_id": owner.user_id})
    assert stored is not None
    assert stored["totp_last_step"] >= 1


async def test_revocations_are_restored_after_redis_loses_them(
    make_app: Callable[..., Any], server_factory: Callable[..., Any]
) -> None:
    server = server_factory("redis")
    url = f"redis://127.0.0.1:{server.port}/0"
    app: AuthApp = await make_app(redis_url=url)
    owner = await app.register()
    assert (await app.post("/logout", headers=owner.auth)).status == 204
    client = Redis.from_url(url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    # the worker's round: MongoDB knows, Redis is told again, verifiers reload
    assert await sync_revocations(app.services.repo, app.services.sessions) == 1
    assert await sync_revocations(app.services.repo, app.services.sessions) == 0
    fresh = await make_app(mongo_db=app.settings.mongo_db, redis_url=url)  # a verifier that never saw the push
    assert await _status(fresh, "/me", owner) == 401


@pytest.mark.parametrize("change", ["disable", "demote"])
async def test_login_inside_the_revoking_transaction_is_revoked_and_announced(
    app: AuthApp, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """A log-in whose session is inserted after the disable/demotion transaction read the user's sessions and
    before it committed (so that log-in's re-read still saw the user unchanged): the transaction alone misses
    that session; the sweep after the commit revokes it and pushes it to every verifier."""
    owner = await app.register()
    admin = await app.invite_and_join(owner, "admin")
    repo = app.services.repo
    user = await repo.user(owner.org_id, admin.user_id)
    assert user is not None
    original = repo.revoke_user_sessions
    raced: list[str] = []

    async def read_then_login(org_id: str, user_id: str, reason: str, session: Any = None, **kw: Any) -> list[str]:
        sids = await original(org_id, user_id, reason, session, **kw)
        # the change's own call (in its transaction when the deployment has them), after its read: a log-in lands
        if not raced:
            raced.append(uuid.uuid4().hex)
            await repo.insert_session(
                {"_id": raced[0], "user_id": user_id, "org_id": org_id, "amr": ["pwd"], "revoked_at": None}
            )
        return sids

    monkeypatch.setattr(repo, "revoke_user_sessions", read_then_login)
    if change == "disable":
        resp = await app.post(f"/members/{admin.user_id}/disable", headers=owner.auth)
    else:
        resp = await app.client.patch(
            f"/api/v1/auth/members/{admin.user_id}", json={"role": "member"}, headers=owner.auth
        )
    assert resp.status == 200, await resp.text()
    [sid] = raced
    raced_doc = await app.rt.db["sessions"].find_one({"_id": sid})
    assert raced_doc is not None
    assert raced_doc["revoke_reason"] == ("user-disabled" if change == "disable" else "demoted")
    revocations = app.rt.tokens.revocations
    assert revocations is not None
    assert await revocations.is_revoked(sid)  # announced: this process's verifier refuses it at once
    assert await app.rt.redis.zscore(set_key(app.services.sessions.namespace), sid) is not None  # and all others
    assert await _status(app, "/me", admin) == 401  # the session it read in the transaction is revoked too
