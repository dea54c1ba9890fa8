"""Secrets at rest (TOTP seeds, signing keys, webhook secrets): Fernet (AES-128-CBC + HMAC-SHA256) under a
list of keys from the environment. Encrypts with the first key, decrypts with any, so keys rotate without
downtime: put the new key first, re-encrypt (``rotate``), then drop the old key.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from typing import Annotated, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import BeforeValidator
from pydantic_settings import NoDecode


class SecretBoxError(ValueError):
    """A key or a stored secret that cannot be used."""


def _split(value: Any) -> Any:
    if isinstance(value, str):
        value = [k.strip() for k in value.split(",") if k.strip()]
    if isinstance(value, list | tuple):
        for key in value:
            try:
                Fernet(key.encode() if isinstance(key, str) else key)
            except (ValueError, binascii.Error) as exc:
                raise ValueError("each key must be 32 url-safe base64-encoded bytes (a Fernet key)") from exc
        return tuple(value)
    return value


EncryptionKeys = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split)]
"""Settings field type: comma-separated Fernet keys, newest first; a bad key is a start-up error."""


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretBoxError("no encryption key given")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except (ValueError, binascii.Error) as exc:
            raise SecretBoxError("each key must be a Fernet key (32 url-safe base64-encoded bytes)") from exc

    @classmethod
    def from_setting(cls, value: str) -> SecretBox:
        """Keys from a comma-separated setting, newest first."""
        return cls([k.strip() for k in value.split(",") if k.strip()])

    def encrypt(self, plain: bytes | str) -> str:
        data = plain.encode() if isinstance(plain, str) else plain
        return self._fernet.encrypt(data).decode()

    def decrypt(self, token: str, ttl: int | None = None) -> bytes:
        """The plain bytes of ``token``; with ``ttl`` (seconds) a token encrypted longer ago than that is
        refused too. Raises :class:`SecretBoxError` for a token no key opens, tampered or too old."""
        try:
            return self._fernet.decrypt(token.encode(), ttl=ttl)
        except InvalidToken as exc:
            raise SecretBoxError("a stored secret cannot be decrypted with the configured keys") from exc

    def decrypt_text(self, token: str) -> str:
        return self.decrypt(token).decode()

    def rotate(self, token: str) -> str:
        """Re-encrypt ``token`` under the newest key."""
        return self._fernet.rotate(token.encode()).decode()


def new_key() -> str:
    """A fresh key for an ``*_ENCRYPTION_KEYS`` / ``*_SECRET_KEYS`` setting."""
    return Fernet.generate_key().decode()
