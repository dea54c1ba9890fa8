"""Invites (events, single use, expiry, revocation), members, roles, disabling, and organisation isolation."""

from __future__ import annotations

import json
import time

from helpers_auth import GOOD_PASSWORD, AuthApp


async def test_invite_events_keep_the_token_private(app: AuthApp) -> None:
    owner = await app.register("Acme")
    resp = await app.post("/invites", {"email": "New.Person@Example.com", "role": "admin"}, headers=owner.auth)
    assert resp.status == 201
    invite = await resp.json()
    assert invite["email"] == "new.person@example.com"
    assert invite["status"] == "pending"
    assert "token" not in json.dumps(invite)
    [public] = await app.events("user.invited")
    [private] = await app.events("invite.delivery_requested")
    token = private["data"]["token"]
    assert token.startswith("inv_")
    assert token in private["data"]["accept_url"]
    assert private["data"]["organization"] == "Acme"
    assert token not in json.dumps(public)
    assert "token" not in public["data"]
    stored = await app.rt.db["invites"].find_one({"_id": invite["id"]})
    assert stored is not None
    assert token not in json.dumps(stored, default=str)

    resp = await app.post("/invites/accept", {"token": token, "name": "Nia", "password": GOOD_PASSWORD})
    assert resp.status == 201
    joined = await resp.json()
    assert joined["user"]["role"] == "admin"
    assert joined["organization"]["id"] == owner.org_id
    [accepted] = await app.events("invite.accepted")
    assert accepted["data"]["user_id"] == joined["user"]["id"]
    # Single use.
    resp = await app.post("/invites/accept", {"token": token, "name": "Again", "password": GOOD_PASSWORD})
    assert resp.status == 400
    # The new member can log in.
    resp = await app.post("/login", {"email": "new.person@example.com", "password": GOOD_PASSWORD})
    assert resp.status == 200


async def test_a_weak_password_does_not_burn_the_invite(app: AuthApp) -> None:
    owner = await app.register()
    resp = await app.post("/invites", {"email": app.unique_email()}, headers=owner.auth)
    token = await app.invite_token(await resp.json())
    resp = await app.post("/invites/accept", {"token": token, "name": "N", "password": "password1"})
    assert resp.status == 422
    resp = await app.post("/invites/accept", {"token": token, "name": "N", "password": GOOD_PASSWORD})
    assert resp.status == 201


async def test_expired_and_revoked_invites_are_refused(app: AuthApp) -> None:
    owner = await app.register()
    resp = await app.post("/invites", {"email": app.unique_email()}, headers=owner.auth)
    expired = await resp.json()
    await app.rt.db["invites"].update_one({"_id": expired["id"]}, {"$set": {"expires_ts": time.time() - 1}})
    resp = await app.post(
        "/invites/accept",
        {"token": await app.invite_token(expired), "name": "N", "password": GOOD_PASSWORD},
    )
    assert resp.status == 400

    resp = await app.post("/invites", {"email": app.unique_email()}, headers=owner.auth)
    revoked = await resp.json()
    resp = await app.client.delete(f"/api/v1/auth/invites/{revoked['id']}", headers=owner.auth)
    assert resp.status == 200
    assert (await resp.json())["status"] == "revoked"
    resp = await app.post(
        "/invites/accept",
        {"token": await app.invite_token(revoked), "name": "N", "password": GOOD_PASSWORD},
    )
    assert resp.status == 400
    resp = await app.get("/invites", params={"status": "revoked"}, headers=owner.auth)
    assert [i["id"] for i in (await resp.json())["items"]] == [revoked["id"]]


async def test_members_cannot_invite_and_existing_accounts_cannot_be_invited(app: AuthApp) -> None:
    owner = await app.register()
    member = await app.invite_and_join(owner, "member")
    resp = await app.post("/invites", {"email": app.unique_email()}, headers=member.auth)
    assert resp.status == 403
    resp = await app.post("/invites", {"email": member.email}, headers=owner.auth)
    assert resp.status == 409  # already a member of this organisation
    resp = await app.post("/invites", {"email": app.unique_email(), "role": "owner"}, headers=owner.auth)
    assert resp.status == 422

    # An address registered in another organisation: the admin learns nothing (same answer as for a new
    # address); only its owner, accepting, is told it already has an account.
    elsewhere = await app.register()
    resp = await app.post("/invites", {"email": elsewhere.email}, headers=owner.auth)
    assert resp.status == 201, await resp.text()
    token = await app.invite_token(resp_json=await resp.json())
    resp = await app.post("/invites/accept", {"token": token, "name": "Eve Elsewhere", "password": GOOD_PASSWORD})
    assert resp.status == 409


async def test_roles_disable_and_sessions(app: AuthApp) -> None:
    owner = await app.register()
    admin = await app.invite_and_join(owner, "admin")
    member = await app.invite_and_join(owner, "member")
    resp = await app.get("/members", headers=member.auth)
    assert {m["id"] for m in (await resp.json())["items"]} == {owner.user_id, admin.user_id, member.user_id}

    # Only the owner changes roles; nobody changes the owner.
    resp = await app.client.patch(f"/api/v1/auth/members/{member.user_id}", json={"role": "admin"}, headers=admin.auth)
    assert resp.status == 403
    resp = await app.client.patch(f"/api/v1/auth/members/{owner.user_id}", json={"role": "admin"}, headers=owner.auth)
    assert resp.status == 409
    resp = await app.client.patch(f"/api/v1/auth/members/{member.user_id}", json={"role": "admin"}, headers=owner.auth)
    assert resp.status == 200
    assert (await resp.json())["role"] == "admin"
    [changed] = await app.events("user.role_changed")
    assert changed["data"] == {
        "user_id": member.user_id,
        "org_id": owner.org_id,
        "role": "admin",
        "changed_by": owner.user_id,
    }
    # The new role reaches the member's tokens at the next refresh.
    resp = await app.post("/refresh", {"refresh_token": member.refresh})
    pair = await resp.json()
    member.access, member.refresh = pair["access_token"], pair["refresh_token"]
    resp = await app.get("/me", headers=member.auth)
    assert (await resp.json())["user"]["role"] == "admin"

    # An admin cannot disable another admin or the owner; the owner can.
    resp = await app.post(f"/members/{member.user_id}/disable", headers=admin.auth)
    assert resp.status == 403
    resp = await app.post(f"/members/{owner.user_id}/disable", headers=admin.auth)
    assert resp.status == 403
    resp = await app.post(f"/members/{member.user_id}/disable", headers=owner.auth)
    assert resp.status == 200
    assert (await resp.json())["status"] == "disabled"
    # Sessions revoked, log-in refused with the same answer as a wrong password.
    resp = await app.post("/refresh", {"refresh_token": member.refresh})
    assert resp.status == 401
    resp = await app.post("/login", {"email": member.email, "password": GOOD_PASSWORD})
    assert resp.status == 401
    [disabled] = await app.events("user.disabled")
    assert disabled["data"]["user_id"] == member.user_id


async def test_an_admin_of_org_a_cannot_see_or_touch_org_b(app: AuthApp) -> None:
    owner_a = await app.register("A")
    admin_a = await app.invite_and_join(owner_a, "admin")
    owner_b = await app.register("B")
    member_b = await app.invite_and_join(owner_b, "member")
    resp = await app.post("/invites", {"email": app.unique_email()}, headers=owner_b.auth)
    invite_b = await resp.json()

    resp = await app.get("/members", headers=admin_a.auth)
    ids = {m["id"] for m in (await resp.json())["items"]}
    assert member_b.user_id not in ids
    assert owner_b.user_id not in ids
    resp = await app.get("/invites", headers=admin_a.auth)
    assert invite_b["id"] not in {i["id"] for i in (await resp.json())["items"]}
    for method, path, body in [
        ("POST", f"/members/{member_b.user_id}/disable", None),
        ("POST", f"/members/{member_b.user_id}/mfa/reset", None),
        ("PATCH", f"/members/{member_b.user_id}", {"role": "admin"}),
        ("DELETE", f"/invites/{invite_b['id']}", None),
    ]:
        headers = owner_a.auth if method == "PATCH" else admin_a.auth
        resp = await app.client.request(method, "/api/v1/auth" + path, json=body, headers=headers)
        assert resp.status == 404, (method, path, await resp.text())
    # B is untouched.
    resp = await app.post("/refresh", {"refresh_token": member_b.refresh})
    assert resp.status == 200
    resp = await app.get("/invites", headers=owner_b.auth)
    assert {i["id"]: i["status"] for i in (await resp.json())["items"]}[invite_b["id"]] == "pending"


async def test_bad_path_ids_are_404_not_500(app: AuthApp) -> None:
    owner = await app.register()
    for bad in ["x", "../../etc", "%00", "a" * 500]:
        resp = await app.post(f"/members/{bad}/disable", headers=owner.auth)
        assert resp.status == 404, bad


async def test_members_are_paged_by_cursor(app: AuthApp) -> None:
    """One paging rule: a full page hands out ``next_cursor`` only when another member follows, so a last page
    that is exactly full ends the walk with ``null``; a cursor that cannot decode is a 422."""
    owner = await app.register()
    joined = [await app.invite_and_join(owner, "member") for _ in range(3)]
    everyone = {owner.user_id, *(m.user_id for m in joined)}

    resp = await app.get("/members", params={"limit": 2}, headers=owner.auth)
    assert resp.status == 200, await resp.text()
    first = await resp.json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    resp = await app.get("/members", params={"limit": 2, "cursor": first["next_cursor"]}, headers=owner.auth)
    assert resp.status == 200, await resp.text()
    last = await resp.json()
    assert len(last["items"]) == 2  # exactly full ...
    assert last["next_cursor"] is None  # ... and the last page
    ids = [m["id"] for m in first["items"] + last["items"]]
    assert ids == sorted(ids)
    assert set(ids) == everyone

    resp = await app.get("/members", params={"limit": 4}, headers=owner.auth)
    assert (await resp.json())["next_cursor"] is None
    resp = await app.get("/members", params={"limit": 3}, headers=owner.auth)
    body = await resp.json()
    assert body["next_cursor"]
    resp = await app.get("/members", params={"limit": 3, "cursor": body["next_cursor"]}, headers=owner.auth)
    body = await resp.json()
    assert (len(body["items"]), body["next_cursor"]) == (1, None)

    for query in ({"cursor": "not a cursor"}, {"cursor": "%%%"}, {"cursor": "abcde"}, {"offset": 1}, {"limit": 0}):
        resp = await app.get("/members", params=query, headers=owner.auth)
        assert resp.status == 422, (query, await resp.text())
        assert resp.content_type == "application/problem+json"


async def test_members_come_oldest_first_and_invites_newest_first(app: AuthApp) -> None:
    """Ids are UUIDv7, so id order is creation order: members page oldest first (the owner leads), invites
    newest first; both by the one cursor rule, and ``offset`` is refused on both."""
    owner = await app.register()
    joined = [await app.invite_and_join(owner, "member") for _ in range(2)]
    resp = await app.get("/members", params={"limit": 10}, headers=owner.auth)
    assert [m["id"] for m in (await resp.json())["items"]] == [owner.user_id, *(m.user_id for m in joined)]

    sent = []
    for _ in range(3):
        resp = await app.post("/invites", {"email": app.unique_email()}, headers=owner.auth)
        assert resp.status == 201, await resp.text()
        sent.append((await resp.json())["id"])
    walked: list[str] = []
    cursor = ""
    while True:
        params = {"limit": 2, "status": "pending", "cursor": cursor}
        resp = await app.get("/invites", params=params, headers=owner.auth)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        walked += [i["id"] for i in body["items"]]
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]
    assert walked == list(reversed(sent))  # newest first, every pending invite once
    resp = await app.get("/invites", params={"offset": 1}, headers=owner.auth)
    assert resp.status == 422
