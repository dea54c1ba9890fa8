"""Access tokens and keys: what the service signs, the shared verifier accepts; forgeries it refuses;
rotation with overlap; private keys encrypted at rest."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers_auth import AuthApp

from novapulse_runtime.tokens import TokenVerifier


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."


async def _claims_and_header(app: AuthApp, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return jwt.decode(token, options={"verify_signature": False}), jwt.get_unverified_header(token)


async def test_tokens_carry_the_required_claims_and_verify_in_another_service(app: AuthApp) -> None:
    owner = await app.register()
    claims, header = await _claims_and_header(app, owner.access)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "EdDSA"
    assert header["kid"]
    for claim in ("iss", "aud", "sub", "org", "role", "amr", "exp", "iat", "jti"):
        assert claim in claims
    assert claims["exp"] - claims["iat"] == app.settings.access_token_ttl
    # Another service verifies with the JWKS alone (fetched once, then no call to auth per token).
    verifier = TokenVerifier(app.settings.auth_jwks_url, issuer="novapulse-auth", audience="novapulse")
    try:
        who = await verifier.verify(owner.access)
        assert (who.user_id, who.org_id, who.role) == (owner.user_id, owner.org_id, "owner")
    finally:
        await verifier.close()


async def test_forged_tokens_are_refused(app: AuthApp) -> None:
    owner = await app.register()
    claims, header = await _claims_and_header(app, owner.access)
    jwks = await (await app.get("/.well-known/jwks.json")).json()
    public_x = jwks["keys"][0]["x"]
    now = int(time.time())
    attacker = Ed25519PrivateKey.generate()
    forged: dict[str, str] = {
        "alg-none": _unsigned({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}, claims),
        "hs256-with-public-key": jwt.encode(
            claims, base64.urlsafe_b64decode(public_x + "=="), algorithm="HS256", headers={"kid": header["kid"]}
        ),
        "jwk-header": jwt.encode(
            claims,
            attacker,
            algorithm="EdDSA",
            headers={"kid": header["kid"], "typ": "at+jwt", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AA"}},
        ),
        "jku-header": jwt.encode(
            claims,
            attacker,
            algorithm="EdDSA",
            headers={"kid": header["kid"], "typ": "at+jwt", "jku": "http://127.0.0.1:1/keys"},
        ),
        "foreign-key-same-kid": jwt.encode(
            claims, attacker, algorithm="EdDSA", headers={"kid": header["kid"], "typ": "at+jwt"}
        ),
        "tampered-claims": _swap_payload(owner.access, {**claims, "org": "x" * 32}),
    }
    # The service's own private key, to sign tokens whose claims or headers are wrong.
    signer = await _service_private_key(app)

    def signed(extra: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(
            {**claims, **extra}, signer, algorithm="EdDSA", headers=headers or {"kid": header["kid"], "typ": "at+jwt"}
        )

    forged["wrong-aud"] = signed({"aud": "someone-else"})
    forged["wrong-iss"] = signed({"iss": "evil"})
    forged["wrong-typ"] = signed({}, {"kid": header["kid"], "typ": "JWT"})
    forged["expired"] = signed({"exp": now - 120, "iat": now - 1000})
    forged["not-yet-valid"] = signed({"nbf": now + 600})
    forged["no-org"] = jwt.encode(
        {k: v for k, v in claims.items() if k != "org"},
        signer,
        algorithm="EdDSA",
        headers={"kid": header["kid"], "typ": "at+jwt"},
    )
    forged["unknown-kid"] = signed({}, {"kid": uuid.uuid4().hex, "typ": "at+jwt"})
    # The genuine token passes, so each refusal below is about the forgery.
    assert (await app.get("/me", headers=owner.auth)).status == 200
    for name, token in forged.items():
        resp = await app.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 401, name
        assert resp.content_type == "application/problem+json"


def _swap_payload(token: str, claims: dict[str, Any]) -> str:
    head, _, sig = token.split(".")
    return f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"


async def _service_private_key(app: AuthApp) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization

    from novapulse_runtime.secretbox import SecretBox

    doc = await app.rt.db["signing_keys"].find_one({}, sort=[("generation", -1)])
    assert doc is not None
    key = serialization.load_der_private_key(
        SecretBox(app.settings.auth_encryption_keys).decrypt(doc["private_enc"]), None
    )
    assert isinstance(key, Ed25519PrivateKey)
    return key


async def test_private_keys_are_encrypted_at_rest(app: AuthApp) -> None:
    from cryptography.hazmat.primitives import serialization

    doc = await app.rt.db["signing_keys"].find_one({})
    assert doc is not None
    assert doc["private_enc"].startswith("gAAAAA")  # a Fernet token, not a PEM/DER key
    assert "PRIVATE" not in json.dumps(doc, default=str)
    key = await _service_private_key(app)
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    assert _b64(raw) not in json.dumps(doc, default=str)


async def test_rotation_publishes_current_and_previous(app: AuthApp) -> None:
    owner = await app.register()
    old_kid = jwt.get_unverified_header(owner.access)["kid"]
    ring = app.services.keys
    await ring.rotate()
    jwks = await (await app.get("/.well-known/jwks.json")).json()
    kids = [k["kid"] for k in jwks["keys"]]
    assert len(kids) == 2
    assert old_kid == kids[1]
    # Tokens signed before the rotation still verify; new tokens use the new key.
    assert (await app.get("/me", headers=owner.auth)).status == 200
    await app.login(owner)
    assert jwt.get_unverified_header(owner.access)["kid"] == kids[0]
    await ring.rotate()
    jwks = await (await app.get("/.well-known/jwks.json")).json()
    assert old_kid not in [k["kid"] for k in jwks["keys"]]
    retired = await app.rt.db["signing_keys"].find_one({"kid": old_kid})
    assert retired is not None
    assert retired["private_enc"] is None
    for key in jwks["keys"]:
        assert set(key) == {"kty", "crv", "x", "kid", "use", "alg"}  # public halves only
