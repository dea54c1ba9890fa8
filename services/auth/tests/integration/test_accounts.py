"""Registration, log-in, refresh rotation and reuse detection, log-out, /me, over real HTTP."""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from helpers_auth import GOOD_PASSWORD, AuthApp

from novapulse_auth.errors import EmailTaken
from novapulse_auth.opaque import token_hash
from novapulse_auth.repository import refresh_token_doc


async def test_register_login_me_refresh_logout(app: AuthApp) -> None:
    owner = await app.register("Acme Ltd")
    resp = await app.get("/me", headers=owner.auth)
    assert resp.status == 200, await resp.text()
    me = await resp.json()
    assert me["user"]["role"] == "owner"
    assert me["organization"] == {"id": owner.org_id, "name": "Acme Ltd"}
    assert me["amr"] == ["pwd"]

    resp = await app.post("/refresh", {"refresh_token": owner.refresh})
    assert resp.status == 200
    pair = await resp.json()
    assert pair["token_type"] == "Bearer"
    assert pair["refresh_token"] != owner.refresh
    resp = await app.get("/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert resp.status == 200

    resp = await app.post("/logout", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert resp.status == 204
    resp = await app.post("/refresh", {"refresh_token": pair["refresh_token"]})
    assert resp.status == 401

    [event] = await app.events("user.registered")
    assert event["data"]["user_id"] == owner.user_id
    assert event["data"]["org_id"] == owner.org_id
    assert "password" not in str(event)


async def test_duplicate_email_conflicts_case_insensitively_without_verification(make_app: Any) -> None:
    # REGISTRATION_EMAIL_VERIFICATION=false (development): immediate 201, and 409 for a registered address
    app: AuthApp = await make_app(registration_email_verification=False)
    owner = await app.register()
    resp = await app.post(
        "/register",
        {"email": owner.email.upper(), "password": GOOD_PASSWORD, "name": "Copy", "organization": "Other"},
    )
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"


async def test_password_policy(app: AuthApp) -> None:
    for bad in ["short1!", "password123", "Password2024!", "qwertyuiop", "aaaaaaaaaaaa", "x" * 129]:
        resp = await app.post(
            "/register", {"email": app.unique_email(), "password": bad, "name": "N", "organization": "O"}
        )
        assert resp.status == 422, (bad, await resp.text())
    resp = await app.post(
        "/register", {"email": app.unique_email(), "password": "x" * 600, "name": "N", "organization": "O"}
    )
    assert resp.status == 422


async def test_refresh_reuse_revokes_the_whole_family(app: AuthApp) -> None:
    owner = await app.register()
    first = owner.refresh
    resp = await app.post("/refresh", {"refresh_token": first})
    second = (await resp.json())["refresh_token"]
    resp = await app.post("/refresh", {"refresh_token": second})
    newest = (await resp.json())["refresh_token"]
    # An attacker replays the first (spent) token: refused, and the family dies, the newest token too.
    resp = await app.post("/refresh", {"refresh_token": first})
    assert resp.status == 401
    resp = await app.post("/refresh", {"refresh_token": newest})
    assert resp.status == 401
    # Another session of the same user is untouched.
    other = await app.login(owner)
    resp = await app.post("/refresh", {"refresh_token": other["refresh_token"]})
    assert resp.status == 200


async def test_refresh_tokens_are_stored_hashed_and_expire_absolutely(app: AuthApp) -> None:
    owner = await app.register()
    # The first token of a family is in its session, hashed; the ones a refresh issues are refresh_tokens documents.
    sessions = await app.rt.db["sessions"].find({"user_id": owner.user_id}).to_list(100)
    assert sessions
    assert all(owner.refresh not in str(s) for s in sessions)
    [session] = [s for s in sessions if s["refresh_hash"] == hashlib.sha256(owner.refresh.encode()).hexdigest()]
    assert await app.rt.db["refresh_tokens"].count_documents({}) == 0
    resp = await app.post("/refresh", {"refresh_token": owner.refresh})
    assert resp.status == 200
    second = (await resp.json())["refresh_token"]
    docs = await app.rt.db["refresh_tokens"].find({}).to_list(100)
    assert [d["sid"] for d in docs] == [session["_id"]]
    assert all(second not in str(d) and owner.refresh not in str(d) for d in docs)
    # Age the session past its absolute limit: the (unused) refresh token no longer works.
    await app.rt.db["sessions"].update_many({}, {"$set": {"expires_ts": time.time() - 1}})
    resp = await app.post("/refresh", {"refresh_token": second})
    assert resp.status == 401
    other = await app.login(owner)  # a fresh family, aged past its end: its first (session-held) token is refused
    await app.rt.db["sessions"].update_many({}, {"$set": {"expires_ts": time.time() - 1}})
    resp = await app.post("/refresh", {"refresh_token": other["refresh_token"]})
    assert resp.status == 401


async def test_a_first_refresh_token_expires_idle(app: AuthApp) -> None:
    owner = await app.register()
    await app.rt.db["sessions"].update_many({}, {"$set": {"refresh_expires_ts": time.time() - 1}})
    resp = await app.post("/refresh", {"refresh_token": owner.refresh})
    assert resp.status == 401


async def test_refresh_tokens_stored_before_the_session_held_them_keep_working(app: AuthApp) -> None:
    """Sessions made before first refresh tokens moved into the session document have no ``refresh_hash``;
    their token is a ``refresh_tokens`` document and keeps rotating, and its reuse still revokes the family."""
    owner = await app.register()
    session = await app.rt.db["sessions"].find_one({"refresh_hash": token_hash(owner.refresh)})
    assert session is not None
    await app.rt.db["sessions"].update_one(
        {"_id": session["_id"]}, {"$unset": {"refresh_hash": "", "refresh_expires_ts": "", "refresh_used_at": ""}}
    )
    user = await app.rt.db["users"].find_one({"_id": owner.user_id})
    assert user is not None
    legacy = "rt_" + secrets.token_urlsafe(32)
    expires = datetime.fromtimestamp(time.time() + 3600, UTC)
    await app.rt.db["refresh_tokens"].insert_one(
        refresh_token_doc(token_hash=token_hash(legacy), sid=session["_id"], user=user, expires_at=expires)
    )
    resp = await app.post("/refresh", {"refresh_token": owner.refresh})  # no longer stored anywhere
    assert resp.status == 401
    resp = await app.post("/refresh", {"refresh_token": legacy})
    assert resp.status == 200, await resp.text()
    newer = (await resp.json())["refresh_token"]
    resp = await app.post("/refresh", {"refresh_token": legacy})  # reuse: the family dies
    assert resp.status == 401
    resp = await app.post("/refresh", {"refresh_token": newer})
    assert resp.status == 401


async def test_garbage_refresh_tokens_are_401(app: AuthApp) -> None:
    for token in ["nope", "rt_" + "A" * 43, "\u0661\u0662"]:
        resp = await app.post("/refresh", {"refresh_token": token})
        assert resp.status == 401
    resp = await app.post("/refresh", {"refresh_token": None})
    assert resp.status == 422
    resp = await app.post("/refresh", {"refresh_token": "x" * 5000})
    assert resp.status == 422


async def test_password_change_revokes_the_other_sessions(app: AuthApp) -> None:
    owner = await app.register()
    other_device_refresh = owner.refresh
    await app.login(owner)  # a second session, now the current one
    resp = await app.post(
        "/password", {"current_password": "Wrong-password-1", "new_password": "Another-Good-Pass-7"}, headers=owner.auth
    )
    assert resp.status == 400
    resp = await app.post(
        "/password", {"current_password": GOOD_PASSWORD, "new_password": "password1"}, headers=owner.auth
    )
    assert resp.status == 422
    resp = await app.post(
        "/password", {"current_password": GOOD_PASSWORD, "new_password": "Another-Good-Pass-7"}, headers=owner.auth
    )
    assert resp.status == 204
    assert (await app.post("/refresh", {"refresh_token": other_device_refresh})).status == 401
    assert (await app.post("/refresh", {"refresh_token": owner.refresh})).status == 200  # this session lives
    assert (await app.post("/login", {"email": owner.email, "password": GOOD_PASSWORD})).status == 401
    assert (await app.post("/login", {"email": owner.email, "password": "Another-Good-Pass-7"})).status == 200
    [event] = await app.events("user.password_changed")
    assert event["data"] == {"user_id": owner.user_id, "org_id": owner.org_id}


async def test_an_address_registered_meanwhile_is_email_taken(app: AuthApp) -> None:
    """The unique index decides a race past the look-up: the repository's EmailInUse becomes EmailTaken (409),
    and nothing of the refused organisation is left behind."""
    owner = await app.register()
    orgs = await app.rt.db["organizations"].count_documents({})
    with pytest.raises(EmailTaken):
        await app.services.accounts.create_owner(owner.email, "Late Comer", "Late", "not-a-hash")
    assert await app.rt.db["organizations"].count_documents({}) == orgs
