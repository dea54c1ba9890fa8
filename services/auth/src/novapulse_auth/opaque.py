"""Opaque bearer secrets (refresh, MFA and invite tokens): random, prefixed, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import secrets

from .constants import TOKEN_BYTES


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """SHA-256 is enough here: the tokens carry 256 random bits, so there is nothing to brute-force."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
