"""Secrets at rest: encrypt with the newest key, decrypt with any, rotate, refuse bad keys."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from novapulse_runtime.secretbox import EncryptionKeys, SecretBox, SecretBoxError, new_key
from novapulse_runtime.settings import ServiceSettings

pytestmark = pytest.mark.unit


def test_rotation_round_trip() -> None:
    old, new = new_key(), new_key()
    stored = SecretBox([old]).encrypt(b"seed")
    assert b"seed" not in stored.encode()
    both = SecretBox([new, old])
    assert both.decrypt(stored) == b"seed"
    rotated = both.rotate(stored)
    assert SecretBox([new]).decrypt_text(rotated) == "seed"
    with pytest.raises(SecretBoxError):
        SecretBox([new]).decrypt(stored)
    with pytest.raises(SecretBoxError):
        SecretBox([]).encrypt("x")
    with pytest.raises(SecretBoxError):
        SecretBox(["short"])


class _Settings(ServiceSettings):
    demo_keys: EncryptionKeys = ()


def test_settings_type_validates_keys() -> None:
    k1, k2 = new_key(), new_key()
    s = _Settings(redis_url="redis://x", mongo_url="mongodb://x", demo_keys=f"{k1}, {k2}")  # type: ignore[arg-type]
    assert s.demo_keys == (k1, k2)
    with pytest.raises(ValidationError):
        _Settings(redis_url="redis://x", mongo_url="mongodb://x", demo_keys="nope")  # type: ignore[arg-type]
