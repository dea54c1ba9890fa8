"""Standard Webhooks signing (https://www.standardwebhooks.com, "Signature scheme"): endpoint secrets
(``whsec_`` + base64 of 24 to 64 random bytes) and signatures ``v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">``. Encryption of secrets at rest is the shared
:class:`~novapulse_runtime.secretbox.SecretBox`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Sequence

from novapulse_runtime.secretbox import SecretBoxError

from .constants import SECRET_BYTES, SECRET_MAX_BYTES, SECRET_MIN_BYTES, SECRET_PREFIX, SIGNATURE_VERSION


def generate_secret(size: int = SECRET_BYTES) -> str:
    """A new ``whsec_`` secret of ``size`` random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(size)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret.

    :raises novapulse_runtime.secretbox.SecretBoxError: (a ``ValueError``) the secret is not ``whsec_``
        followed by base64 of 24 to 64 bytes.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise SecretBoxError(f"a secret starts with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretBoxError("a secret is whsec_ followed by base64") from exc
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise SecretBoxError(f"a secret holds {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,...`` signature of exactly these body bytes."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode()}"


def signature_header(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per active key, space-separated (rotation)."""
    return " ".join(sign(k, msg_id, timestamp, body) for k in keys)


def verify(key: bytes, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """True when any signature in ``header`` matches (constant-time comparison)."""
    expected = sign(key, msg_id, timestamp, body).encode()
    return any(hmac.compare_digest(expected, part.encode()) for part in header.split())
