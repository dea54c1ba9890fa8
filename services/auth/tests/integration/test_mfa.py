"""TOTP MFA: set-up (URI, QR codes), enabling, the log-in challenge, and the attacks of the issue."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from urllib.parse import parse_qs, unquote, urlparse

import jwt
from helpers_auth import GOOD_PASSWORD, Account, AuthApp, code_at, secret_of
from PIL import Image

from novapulse_auth.constants import MFA_CHALLENGE_KEY
from novapulse_auth.opaque import token_hash


async def _challenge(app: AuthApp, acct: Account) -> str:
    body = await app.login(acct)
    assert body["mfa_required"] is True
    assert "access_token" not in body
    assert "refresh_token" not in body
    return str(body["mfa_token"])


async def _verify(app: AuthApp, token: str, **answer: object) -> tuple[int, dict[str, object]]:
    resp = await app.post("/mfa/verify", {"mfa_token": token, **answer})
    return resp.status, await resp.json()


async def test_setup_gives_a_scannable_qr_and_a_complete_uri(app: AuthApp) -> None:
    owner = await app.register()
    resp = await app.post("/mfa/setup", headers=owner.auth)
    assert resp.status == 200
    body = await resp.json()
    uri = urlparse(body["otpauth_uri"])
    assert uri.scheme == "otpauth"
    assert uri.netloc == "totp"
    assert unquote(uri.path) == f"/NovaPulse:{owner.email}"
    params = {k: v[0] for k, v in parse_qs(uri.query).items()}
    assert params["issuer"] == "NovaPulse"
    assert (params["algorithm"], params["digits"], params["period"]) == ("SHA1", "6", "30")
    assert len(base64.b32decode(params["secret"] + "=" * (-len(params["secret"]) % 8))) >= 20
    assert body["qr_png"].startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(body["qr_png"].split(",", 1)[1])))
    assert png.size[0] == png.size[1] > 100
    assert "<svg" in body["qr_svg"]
    # The pending secret is encrypted at rest.
    doc = await app.rt.db["users"].find_one({"_id": owner.user_id})
    assert doc is not None
    assert params["secret"] not in json.dumps(doc, default=str)
    # Running set-up again replaces the pending secret.
    resp = await app.post("/mfa/setup", headers=owner.auth)
    second = secret_of((await resp.json())["otpauth_uri"])
    assert second != params["secret"]
    resp = await app.post("/mfa/enable", {"code": code_at(params["secret"], 0)}, headers=owner.auth)
    assert resp.status == 400
    resp = await app.post("/mfa/enable", {"code": code_at(second, 1)}, headers=owner.auth)
    assert resp.status == 200


async def test_enable_without_or_after_the_pending_secret(app: AuthApp) -> None:
    owner = await app.register()
    resp = await app.post("/mfa/enable", {"code": "123456"}, headers=owner.auth)
    assert resp.status == 409
    resp = await app.post("/mfa/setup", headers=owner.auth)
    secret = secret_of((await resp.json())["otpauth_uri"])
    await app.rt.db["users"].update_one({"_id": owner.user_id}, {"$set": {"mfa_pending_expires_ts": time.time() - 1}})
    resp = await app.post("/mfa/enable", {"code": code_at(secret, 0)}, headers=owner.auth)
    assert resp.status == 409


async def test_full_flow_with_app_code_and_recovery_code(app: AuthApp) -> None:
    owner = await app.register()
    await app.enable_mfa(owner)
    assert len(owner.recovery_codes) == 10
    assert len(set(owner.recovery_codes)) == 10
    stored = await app.rt.db["recovery_codes"].find({"user_id": owner.user_id}).to_list(20)
    assert len(stored) == 10
    dump = json.dumps(stored, default=str)
    assert not any(c in dump or c.replace("-", "") in dump for c in owner.recovery_codes)
    assert len({d["salt"] for d in stored}) == 10
    [enabled] = await app.events("mfa.enabled")
    assert enabled["data"] == {"user_id": owner.user_id, "org_id": owner.org_id}

    # The code that enabled MFA is spent: the next step's code logs in.
    token = await _challenge(app, owner)
    status, _ = await _verify(app, token, code=code_at(owner.totp_secret, 0))
    assert status == 401
    status, body = await _verify(app, token, code=code_at(owner.totp_secret, 1))
    assert status == 200, body
    claims = jwt.decode(str(body["access_token"]), options={"verify_signature": False})
    assert "otp" in claims["amr"]

    # A recovery code works once.
    token = await _challenge(app, owner)
    status, body = await _verify(app, token, recovery_code=owner.recovery_codes[0].lower())
    assert status == 200, body
    token = await _challenge(app, owner)
    status, _ = await _verify(app, token, recovery_code=owner.recovery_codes[0])
    assert status == 401
    [used] = await app.events("mfa.recovery_code_used")
    assert used["data"]["remaining"] == 9


async def test_totp_replay_sequential_and_parallel(app: AuthApp) -> None:
    owner = await app.register()
    await app.enable_mfa(owner)
    code = code_at(owner.totp_secret, 1)
    token = await _challenge(app, owner)
    assert (await _verify(app, token, code=code))[0] == 200
    token = await _challenge(app, owner)
    assert (await _verify(app, token, code=code))[0] == 401  # same code, new challenge: refused

    # Parallel: two challenges, the same fresh code at once: exactly one wins.
    other = await app.register()
    await app.enable_mfa(other)
    fresh = code_at(other.totp_secret, 1)
    tokens = [await _challenge(app, other) for _ in range(4)]
    results = await asyncio.gather(*(_verify(app, t, code=fresh) for t in tokens))
    assert sorted(s for s, _ in results) == [200, 401, 401, 401]


async def test_codes_two_steps_away_are_refused(app: AuthApp) -> None:
    owner = await app.register()
    await app.enable_mfa(owner)
    token = await _challenge(app, owner)
    for steps in (-3, 3):
        status, _ = await _verify(app, token, code=code_at(owner.totp_secret, steps))
        assert status == 401, steps
    # (±2 could equal a ±1 code by chance: the window test uses ±3, which the server never checks.)


async def test_malformed_codes_are_4xx_never_500(app: AuthApp) -> None:
    owner = await app.register()
    await app.enable_mfa(owner)
    token = await _challenge(app, owner)
    fullwidth, arabic_indic = "\uff11\uff12\uff13\uff14\uff15\uff16", "\u0661\u0662\u0663\u0664\u0665\u0666"
    bad_codes: list[object] = [
        "abcdef",
        "12345",
        "1234567",
        "",
        None,
        fullwidth,
        arabic_indic,
        123456,
        "12 456",
        [],
        {},
    ]
    for bad in bad_codes:
        resp = await app.post("/mfa/verify", {"mfa_token": token, "code": bad})
        assert 400 <= resp.status < 500, bad
        assert resp.content_type == "application/problem+json"
    for body in [{"mfa_token": token}, {"mfa_token": token, "code": "123456", "recovery_code": "AAAAA-BBBBB"}]:
        resp = await app.post("/mfa/verify", body)
        assert resp.status == 422
    resp = await app.post("/mfa/enable", {"code": fullwidth}, headers=owner.auth)
    assert resp.status == 422
    # None of the malformed inputs counted as a guess: the challenge still works.
    status, _ = await _verify(app, token, code=code_at(owner.totp_secret, 1))
    assert status == 200


async def test_the_sixth_wrong_code_finds_the_challenge_dead(app: AuthApp) -> None:
    owner = await app.register()
    await app.enable_mfa(owner)
    token = await _challenge(app, owner)
    good = code_at(owner.totp_secret, 1)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    for _ in range(5):
        status, body = await _verify(app, token, code=wrong)
        assert status == 401
    status, body = await _verify(app, token, code=good)  # even the right code
    assert status == 401
    assert "MFA token" in str(body["detail"])
    failed = await app.events("mfa.challenge_failed")
    assert [e["data"]["attempts"] for e in failed] == [1, 2, 3, 4, 5]
    assert all("code" not in e["data"] for e in failed)


async def test_bad_mfa_tokens(app: AuthApp) -> None:
    owner = await app.register()
    await app.enable_mfa(owner)
    other = await app.register()
    await app.enable_mfa(other)
    code = code_at(owner.totp_secret, 1)
    # Expired.
    token = await _challenge(app, owner)
    await app.rt.redis.delete(MFA_CHALLENGE_KEY + token_hash(token))
    assert (await _verify(app, token, code=code))[0] == 401
    # Foreign: another user's challenge with this user's code.
    foreign = await _challenge(app, other)
    assert (await _verify(app, foreign, code=code))[0] == 401
    # An access or refresh token in its place.
    plain = await app.register()
    assert (await _verify(app, plain.access, code=code))[0] == 422  # longer than any mfa_token can be
    for fake in [plain.refresh, "mfa_" + "A" * 43, "x"]:
        assert (await _verify(app, fake, code=code))[0] == 401
    # Reused after success.
    token = await _challenge(app, owner)
    assert (await _verify(app, token, code=code))[0] == 200
    assert (await _verify(app, token, recovery_code=owner.recovery_codes[0]))[0] == 401
    # The challenge lives at most 5 minutes.
    token = await _challenge(app, owner)
    ttl = await app.rt.redis.ttl(MFA_CHALLENGE_KEY + token_hash(token))
    assert 0 < ttl <= 300


async def test_parallel_challenges_share_one_guess_budget(app: AuthApp) -> None:
    owner = await app.register()
    await app.enable_mfa(owner)
    good = code_at(owner.totp_secret, 1)
    wrong = f"{(int(good) + 7) % 1_000_000:06d}"
    tokens = [await _challenge(app, owner) for _ in range(4)]
    statuses = []
    for token in tokens:  # 4 challenges x 3 wrong codes = 12 guesses; the per-user budget is 10
        for _ in range(3):
            statuses.append((await _verify(app, token, code=wrong))[0])
    assert statuses.count(401) == 10
    assert statuses.count(429) == 2
    # Locked for now, even with the right code on a fresh challenge.
    token = await _challenge(app, owner)
    assert (await _verify(app, token, code=good))[0] == 429


async def test_recovery_code_reuse_concurrently(app: AuthApp) -> None:
    owner = await app.register()
    await app.enable_mfa(owner)
    tokens = [await _challenge(app, owner) for _ in range(4)]
    results = await asyncio.gather(*(_verify(app, t, recovery_code=owner.recovery_codes[3]) for t in tokens))
    assert sorted(s for s, _ in results) == [200, 401, 401, 401]


async def test_regenerate_kills_the_old_codes(app: AuthApp) -> None:
    owner = await app.register()
    await app.enable_mfa(owner)
    resp = await app.post("/mfa/recovery-codes", {"code": code_at(owner.totp_secret, 1)}, headers=owner.auth)
    assert resp.status == 200
    fresh = (await resp.json())["recovery_codes"]
    assert len(fresh) == 10
    assert not set(fresh) & set(owner.recovery_codes)
    token = await _challenge(app, owner)
    assert (await _verify(app, token, recovery_code=owner.recovery_codes[1]))[0] == 401
    assert (await _verify(app, token, recovery_code=fresh[0]))[0] == 200


async def test_disable_needs_the_password_and_a_fresh_code(app: AuthApp) -> None:
    owner = await app.register()
    await app.enable_mfa(owner)  # spends step 0
    next_code = code_at(owner.totp_secret, 1)
    resp = await app.post("/mfa/disable", {"password": "Not-the-password-1", "code": next_code}, headers=owner.auth)
    assert resp.status == 400
    old_code = code_at(owner.totp_secret, -1)
    resp = await app.post("/mfa/disable", {"password": GOOD_PASSWORD, "code": old_code}, headers=owner.auth)
    assert resp.status == 400  # older than the last accepted step
    resp = await app.post("/mfa/disable", {"password": GOOD_PASSWORD, "code": next_code}, headers=owner.auth)
    assert resp.status == 204
    [event] = await app.events("mfa.disabled")
    assert event["data"] == {"user_id": owner.user_id, "org_id": owner.org_id, "by": owner.user_id}
    body = await app.login(owner)
    assert "access_token" in body
    resp = await app.post("/mfa/disable", {"password": GOOD_PASSWORD, "code": next_code}, headers=owner.auth)
    assert resp.status == 409


async def test_admin_reset_of_a_members_mfa(app: AuthApp) -> None:
    owner = await app.register()
    admin = await app.invite_and_join(owner, "admin")
    member = await app.invite_and_join(owner, "member")
    await app.enable_mfa(member)
    await app.enable_mfa(admin)
    resp = await app.post(f"/members/{admin.user_id}/mfa/reset", headers=admin.auth)
    assert resp.status == 409  # not on oneself
    resp = await app.post(f"/members/{member.user_id}/mfa/reset", headers=admin.auth)
    assert resp.status == 200
    assert (await resp.json())["mfa_enabled"] is False
    body = await app.login(member)
    assert "access_token" in body
    [event] = await app.events("mfa.disabled")
    assert event["data"] == {"user_id": member.user_id, "org_id": owner.org_id, "by": admin.user_id}
    assert not await app.rt.db["recovery_codes"].count_documents({"user_id": member.user_id})


async def test_status_counts_the_unused_recovery_codes(app: AuthApp) -> None:
    """``GET /mfa``: off → 0 codes; on → 10; a recovery code spent → 9; regenerated → 10; each user sees only
    their own state, and only with a token."""
    owner = await app.register()
    other = await app.register(org="Other")
    assert (await app.get("/mfa")).status == 401
    resp = await app.get("/mfa", headers=owner.auth)
    assert resp.status == 200
    assert await resp.json() == {"enabled": False, "recovery_codes_remaining": 0}
    await app.enable_mfa(owner)
    assert await (await app.get("/mfa", headers=owner.auth)).json() == {"enabled": True, "recovery_codes_remaining": 10}
    token = await _challenge(app, owner)
    status, body = await _verify(app, token, recovery_code=owner.recovery_codes[0])
    assert status == 200, body
    assert await (await app.get("/mfa", headers=owner.auth)).json() == {"enabled": True, "recovery_codes_remaining": 9}
    assert await (await app.get("/mfa", headers=other.auth)).json() == {"enabled": False, "recovery_codes_remaining": 0}
    resp = await app.post("/mfa/recovery-codes", {"code": code_at(owner.totp_secret, 1)}, headers=owner.auth)
    assert resp.status == 200, await resp.text()
    assert (await (await app.get("/mfa", headers=owner.auth)).json())["recovery_codes_remaining"] == 10
