"""Endpoint signing secrets (``whsec_``): generation and validation. Encryption at rest is the shared
:class:`~novapulse_runtime.secretbox.SecretBox`, re-exported here."""

from __future__ import annotations

import base64
import binascii
import os

from novapulse_runtime.secretbox import SecretBox, SecretBoxError
from novapulse_runtime.secretbox import new_key as new_encryption_key

from .constants import SECRET_BYTES, SECRET_MAX_BYTES, SECRET_MIN_BYTES, SECRET_PREFIX

SecretError = SecretBoxError
"""A secret or key that cannot be used (the shared runtime's error type)."""


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


__all__ = ["SecretBox", "SecretError", "generate_secret", "new_encryption_key", "secret_key"]
