"""Endpoint signing secrets: generation, validation, and encryption at rest (MultiFernet, key rotation)."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .constants import SECRET_BYTES, SECRET_MAX_BYTES, SECRET_MIN_BYTES, SECRET_PREFIX


class SecretError(ValueError):
    """A secret or key that cannot be used."""


def generate_secret(size: int = SECRET_BYTES) -> str:
    """A new ``whsec_`` secret of ``size`` random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(size)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret; raises :class:`SecretError` if malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise SecretError(f"a secret starts with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretError("a secret is whsec_ followed by base64") from exc
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise SecretError(f"a secret holds {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes")
    return key


class SecretBox:
    """Encrypts secrets with the first key and decrypts with any, so keys rotate without downtime."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretError("no encryption key given")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except (ValueError, binascii.Error) as exc:
            raise SecretError("each key must be a Fernet key (32 url-safe base64-encoded bytes)") from exc

    @classmethod
    def from_setting(cls, value: str) -> SecretBox:
        """Keys from a comma-separated setting, newest first."""
        return cls([k.strip() for k in value.split(",") if k.strip()])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretError("a stored secret cannot be decrypted with the configured keys") from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt ``token`` under the newest key."""
        return self._fernet.rotate(token.encode()).decode()


def new_encryption_key() -> str:
    """A fresh key for ``WEBHOOK_SECRET_KEYS``."""
    return Fernet.generate_key().decode()
