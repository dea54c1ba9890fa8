"""Registration by e-mail verification: ``POST /register`` answers the same for a new and a registered address
and does the same work on both paths; the link's token (stored hashed, single use, expiring) creates the
organisation and its owner; the owner of a registered address is told that someone tried."""

from __future__ import annotations

import time
from typing import Any

import pytest
from helpers_auth import GOOD_PASSWORD, AuthApp
from pymongo.errors import AutoReconnect

pytestmark = pytest.mark.integration


def _body(email: str, org: str = "Initech") -> dict[str, str]:
    return {"email": email, "password": GOOD_PASSWORD, "name": "Nora New", "organization": org}


async def _answer(resp: Any) -> tuple[int, dict[str, Any], str]:
    body = await resp.json()
    body.pop("instance", None)
    return resp.status, body, resp.headers["Content-Type"]


async def test_new_and_registered_addresses_get_the_same_answer(app: AuthApp) -> None:
    owner = await app.register()
    new = app.unique_email("new")
    first = await _answer(await app.post("/register", _body(new)))
    again = await _answer(await app.post("/register", _body(owner.email.upper())))
    assert first == again
    assert first[0] == 202
    assert first[1]["expires_in"] == app.settings.registration_ttl
    assert "token" not in str(first[1])
    # nothing exists before the link is followed
    assert await app.rt.db["users"].count_documents({"email": new}) == 0


async def test_both_paths_do_the_same_work(app: AuthApp) -> None:
    owner = await app.register()
    new = app.unique_email("new")
    before_docs = await app.rt.db["registrations"].count_documents({})
    before_events = len(await app.events())
    hashes = []
    for email in (new, owner.email):
        before = app.services.passwords.hashed
        assert (await app.post("/register", _body(email))).status == 202
        hashes.append(app.services.passwords.hashed - before)
    assert hashes == [1, 1]  # the password is hashed on both paths
    docs = await app.rt.db["registrations"].find({"email": {"$in": [new, owner.email]}}).to_list(10)
    mine = {d["email"]: d for d in docs if d["email"] == new or d["status"] == "attempted"}
    assert await app.rt.db["registrations"].count_documents({}) == before_docs + 2  # one write each
    assert len(await app.events()) == before_events + 2  # one event each
    # the same document shape; only the new address's keeps the hash (none of what was typed for another's)
    assert set(mine[new]) == set(mine[owner.email])
    assert mine[new]["password_hash"].startswith("$argon2id$")
    assert mine[owner.email]["password_hash"] == ""
    assert (mine[new]["status"], mine[owner.email]["status"]) == ("pending", "attempted")


async def test_a_registered_address_tells_its_owner(make_app: Any) -> None:
    app: AuthApp = await make_app(trusted_proxies="127.0.0.1/32")
    owner = await app.register()
    resp = await app.post("/register", _body(owner.email), headers={"X-Forwarded-For": "2001:db8::77"})
    assert resp.status == 202
    [event] = await app.events("user.registration_attempted")
    assert event["data"] == {"user_id": owner.user_id, "org_id": owner.org_id, "ip": "2001:db8::77"}
    assert event["org_id"] == owner.org_id
    requested = [
        e for e in await app.events("registration.verification_requested") if e["data"]["email"] == owner.email
    ]
    assert len(requested) == 1  # the owner's own registration only: no link for a registered address


async def test_the_link_creates_the_organisation_once(app: AuthApp) -> None:
    new = app.unique_email("new")
    assert (await app.post("/register", _body(new, "Globex"))).status == 202
    [event] = [e for e in await app.events("registration.verification_requested") if e["data"]["email"] == new]
    token = event["data"]["token"]
    assert event["org_id"] == ""
    assert event["data"]["verify_url"] == f"{app.settings.registration_verify_url}?token={token}"
    assert event["data"]["organization"] == "Globex"
    stored = await app.rt.db["registrations"].find_one({"email": new})
    assert stored is not None
    assert token not in str(stored)  # only its hash is kept

    resp = await app.post("/register/verify", {"token": token, "password": GOOD_PASSWORD})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["user"]["email"] == new
    assert body["user"]["role"] == "owner"
    assert body["organization"]["name"] == "Globex"
    me = await app.get("/me", headers={"Authorization": f"Bearer {body['tokens']['access_token']}"})
    assert me.status == 200
    [registered] = [e for e in await app.events("user.registered") if e["data"]["email"] == new]
    assert registered["data"]["org_id"] == body["organization"]["id"]
    assert (await app.post("/login", {"email": new, "password": GOOD_PASSWORD})).status == 200

    assert (await app.post("/register/verify", {"token": token, "password": GOOD_PASSWORD})).status == 400  # single use
    # registering the address again is now the "registered" path: no second organisation
    assert (await app.post("/register", _body(new))).status == 202
    assert len([e for e in await app.events("registration.verification_requested") if e["data"]["email"] == new]) == 1


async def test_expired_garbage_and_attempt_tokens_are_refused(app: AuthApp) -> None:
    new = app.unique_email("late")
    assert (await app.post("/register", _body(new))).status == 202
    token = await app.verification_token(new)
    await app.rt.db["registrations"].update_many({"email": new}, {"$set": {"expires_ts": time.time() - 1}})
    assert (await app.post("/register/verify", {"token": token, "password": GOOD_PASSWORD})).status == 400
    for garbage in ("reg_nope", "x", "\u0661\u0662"):
        resp = await app.post("/register/verify", {"token": garbage, "password": GOOD_PASSWORD})
        assert resp.status == 400
        assert resp.content_type == "application/problem+json"
    assert (await app.post("/register/verify", {"token": "x" * 5000, "password": GOOD_PASSWORD})).status == 422


async def test_two_pending_registrations_of_one_address_make_one_account(app: AuthApp) -> None:
    new = app.unique_email("twice")
    for org in ("First", "Second"):
        assert (await app.post("/register", _body(new, org))).status == 202
    tokens = [
        e["data"]["token"] for e in await app.events("registration.verification_requested") if e["data"]["email"] == new
    ]
    assert len(tokens) == 2
    assert (await app.post("/register/verify", {"token": tokens[1], "password": GOOD_PASSWORD})).status == 201
    resp = await app.post("/register/verify", {"token": tokens[0], "password": GOOD_PASSWORD})
    assert resp.status == 409
    assert await app.rt.db["users"].count_documents({"email": new}) == 1


async def test_the_link_without_the_registration_password_creates_nothing(app: AuthApp) -> None:
    """An attacker registers the victim's address with a password of their own; the victim follows the genuine
    link (with a password of their own, or none they know): no account comes to exist under their address. The
    same 400 as an unknown token, and the token is not spent."""
    victim = app.unique_email("victim")
    assert (await app.post("/register", _body(victim) | {"password": "attacker-chosen-Secret-42"})).status == 202
    token = await app.verification_token(victim)
    resp = await app.post("/register/verify", {"token": token, "password": GOOD_PASSWORD})
    unknown = await app.post("/register/verify", {"token": "reg_unknown", "password": GOOD_PASSWORD})
    assert (resp.status, (await resp.json())["detail"]) == (400, (await unknown.json())["detail"])
    assert await app.rt.db["users"].count_documents({"email": victim}) == 0
    assert (await app.post("/login", {"email": victim, "password": "attacker-chosen-Secret-42"})).status == 401
    # not spent: whoever holds both the link and the password still completes it
    resp = await app.post("/register/verify", {"token": token, "password": "attacker-chosen-Secret-42"})
    assert resp.status == 201, await resp.text()


async def test_five_wrong_passwords_void_the_registration(app: AuthApp) -> None:
    new = app.unique_email("guessed")
    assert (await app.post("/register", _body(new))).status == 202
    token = await app.verification_token(new)
    for i in range(5):
        assert (await app.post("/register/verify", {"token": token, "password": f"wrong-{i}-Password"})).status == 400
    stored = await app.rt.db["registrations"].find_one({"email": new})
    assert stored is not None
    assert (stored["status"], stored["failures"]) == ("void", 5)
    assert (await app.post("/register/verify", {"token": token, "password": GOOD_PASSWORD})).status == 400
    assert await app.rt.db["users"].count_documents({"email": new}) == 0


async def test_a_failure_creating_the_account_does_not_spend_the_link(
    app: AuthApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = app.unique_email("unlucky")
    assert (await app.post("/register", _body(new))).status == 202
    token = await app.verification_token(new)
    repo = app.services.repo
    original = repo.insert_user
    failed: list[str] = []

    async def fail_once(doc: dict[str, Any], session: Any = None) -> None:
        if not failed:
            failed.append(doc["email"])
            raise AutoReconnect("primary stepped down")
        await original(doc, session)

    monkeypatch.setattr(repo, "insert_user", fail_once)
    with pytest.raises(AutoReconnect):
        await app.services.registration.verify(token, GOOD_PASSWORD)
    assert failed == [new]
    stored = await app.rt.db["registrations"].find_one({"email": new})
    assert stored is not None
    assert stored["status"] == "pending"
    resp = await app.post("/register/verify", {"token": token, "password": GOOD_PASSWORD})
    assert resp.status == 201, await resp.text()
    assert await app.rt.db["users"].count_documents({"email": new}) == 1
