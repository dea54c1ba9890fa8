"""Standard Webhooks signatures: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from .constants import SIGNATURE_VERSION


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
