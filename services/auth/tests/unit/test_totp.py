"""TOTP matching, URI shape and recovery-code hashing (pure logic)."""

from __future__ import annotations

import pyotp

from novapulse_auth.totp import (
    hash_recovery_code,
    matching_step,
    new_recovery_codes,
    new_secret,
    normalize_recovery_code,
    provisioning_uri,
)

NOW = 1_700_000_000.0  # a fixed server time: step 56_666_666


def test_window_is_one_step_either_side() -> None:
    secret = new_secret()
    totp = pyotp.TOTP(secret)
    step = int(NOW // 30)
    for offset in (-1, 0, 1):
        assert matching_step(secret, totp.at(NOW + 30 * offset), at=NOW) == step + offset
    for offset in (-3, 3, 10):
        code = totp.at(NOW + 30 * offset)
        if code not in {totp.at(NOW + 30 * o) for o in (-1, 0, 1)}:  # skip the 1-in-a-million coincidence
            assert matching_step(secret, code, at=NOW) is None


def test_malformed_codes_never_match() -> None:
    secret = new_secret()
    good = pyotp.TOTP(secret).at(NOW)
    fullwidth = "".join(chr(0xFF10 + int(c)) for c in good)
    for bad in ["", good[:5], good + "0", fullwidth, f" {good[1:]}", "abcdef"]:
        assert matching_step(secret, bad, at=NOW) is None


def test_secret_has_at_least_160_bits() -> None:
    import base64

    secret = new_secret()
    assert len(base64.b32decode(secret + "=" * (-len(secret) % 8))) >= 20
    assert new_secret() != secret


def test_provisioning_uri() -> None:
    secret = new_secret()
    uri = provisioning_uri(secret, "ann@example.com", "Nova Pulse")
    assert uri.startswith("otpauth://totp/Nova%20Pulse:ann@example.com?")
    for part in (f"secret={secret}", "issuer=Nova%20Pulse", "algorithm=SHA1", "digits=6", "period=30"):
        assert part in uri
    parsed = pyotp.parse_uri(uri)
    assert parsed.issuer == "Nova Pulse"


def test_recovery_codes_are_unique_and_hash_with_salt() -> None:
    codes = new_recovery_codes(10)
    assert len(set(codes)) == 10
    assert all(len(c) == 11 and c[5] == "-" for c in codes)
    salt_a, salt_b = b"a" * 16, b"b" * 16
    assert hash_recovery_code(codes[0], salt_a) != hash_recovery_code(codes[0], salt_b)
    assert hash_recovery_code(codes[0].lower().replace("-", " "), salt_a) == hash_recovery_code(codes[0], salt_a)
    assert normalize_recovery_code("abcde-fghij") == "ABCDEFGHIJ"
