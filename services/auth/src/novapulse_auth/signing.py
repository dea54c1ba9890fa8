"""Signing keys (Ed25519, private halves encrypted at rest) and access-token issuing.

Keys are numbered by a unique ``generation``: the highest signs (current), the one below it is still
published (previous) so tokens signed before a rotation stay verifiable, older ones are retired and their
private halves erased. Two processes rotating at once cannot both win: the unique index refuses the second.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from novapulse_runtime.clock import utcnow
from novapulse_runtime.secretbox import SecretBox

from .constants import ACCESS_TOKEN_TYPE, SIGNING_ALGORITHM
from .repository import SigningKeyRepository, signing_key_doc


@dataclass(frozen=True)
class SigningKey:
    kid: str
    generation: int
    created_at: datetime
    public_jwk: dict[str, Any]
    private: Ed25519PrivateKey | None


@dataclass(frozen=True)
class AccessToken:
    token: str
    jti: str
    expires_in: int


class KeyRing:
    """Holds the current and previous signing keys, reloading them from MongoDB now and then."""

    def __init__(
        self,
        keys: SigningKeyRepository,
        box: SecretBox,
        *,
        issuer: str,
        audience: str,
        access_ttl: int,
        reload_interval: float,
        enc_key_id: str = "",
    ) -> None:
        self._store = keys
        self._box = box
        self._enc_key_id = enc_key_id
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self._reload_interval = reload_interval
        self._keys: list[SigningKey] = []
        self._loaded_at = -float("inf")

    async def create_indexes(self) -> None:
        await self._store.create_indexes()

    async def ensure(self) -> None:
        """Load the keys, creating the first one when there is none."""
        await self.load()
        if not self._keys:
            await self._insert(1)
            await self.load()

    async def load(self) -> None:
        docs = await self._store.published(2)
        keys = []
        for doc in docs:
            private = None
            if doc.get("private_enc"):
                raw = self._box.decrypt(doc["private_enc"])
                loaded = serialization.load_der_private_key(raw, password=None)
                if isinstance(loaded, Ed25519PrivateKey):
                    private = loaded
            keys.append(SigningKey(doc["kid"], int(doc["generation"]), doc["created_at"], doc["public_jwk"], private))
        self._keys = keys
        self._loaded_at = time.monotonic()

    async def refresh(self, max_age: float | None = None) -> None:
        """Reload when the cached keys are older than ``max_age`` (default: the reload interval)."""
        limit = self._reload_interval if max_age is None else max_age
        if time.monotonic() - self._loaded_at >= limit:
            await self.load()

    async def _insert(self, generation: int) -> bool:
        private = Ed25519PrivateKey.generate()
        kid = f"{utcnow():%Y%m%d}-{secrets.token_hex(6)}"
        jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
        jwk.update({"kid": kid, "use": "sig", "alg": SIGNING_ALGORITHM})
        der = private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        doc = signing_key_doc(
            kid=kid,
            generation=generation,
            alg=SIGNING_ALGORITHM,
            public_jwk=jwk,
            private_enc=self._box.encrypt(der),
            enc_key_id=self._enc_key_id,
        )
        return await self._store.insert(doc)  # False: another process rotated first

    async def rotate(self) -> None:
        """Make a new current key; the old current becomes previous; older keys are retired and erased."""
        await self.load()
        generation = (self._keys[0].generation if self._keys else 0) + 1
        if await self._insert(generation):
            await self._store.succeed(generation)
        await self.load()

    def rotation_due(self, interval: int) -> bool:
        if not self._keys:
            return True
        return (utcnow() - self._keys[0].created_at).total_seconds() >= interval

    def jwks(self) -> dict[str, Any]:
        """The published keys: current and previous."""
        return {"keys": [dict(k.public_jwk) for k in self._keys]}

    def _signer(self) -> SigningKey:
        for key in self._keys:
            if key.private is not None:
                return key
        raise RuntimeError("no signing key loaded")

    async def issue(self, *, user_id: str, org_id: str, role: str, amr: list[str], sid: str) -> AccessToken:
        """An access token the shared verifier accepts (``typ: at+jwt``, ``kid``, EdDSA)."""
        await self.refresh()
        key = self._signer()
        assert key.private is not None
        now = int(time.time())
        jti = uuid.uuid4().hex
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "org": org_id,
            "role": role,
            "amr": amr,
            "sid": sid,
            "iat": now,
            "nbf": now,
            "exp": now + self.access_ttl,
            "jti": jti,
        }
        token = jwt.encode(
            claims, key.private, algorithm=SIGNING_ALGORITHM, headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE}
        )
        return AccessToken(token, jti, self.access_ttl)
