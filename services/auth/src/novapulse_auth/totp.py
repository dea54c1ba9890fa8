"""TOTP (RFC 6238, SHA1, 6 digits, 30 s) on the server clock, recovery codes, and QR rendering. Pure logic."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
import time
from urllib.parse import quote, urlencode

import pyotp
import qrcode
import qrcode.image.svg

from .constants import RECOVERY_CODE_LENGTH, TOTP_DIGITS, TOTP_PERIOD, TOTP_SECRET_BYTES, TOTP_WINDOW

_RECOVERY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


def new_secret() -> str:
    """A base32 TOTP secret of ``TOTP_SECRET_BYTES`` random bytes."""
    return base64.b32encode(secrets.token_bytes(TOTP_SECRET_BYTES)).decode().rstrip("=")


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """``otpauth://`` URI with issuer, label and the explicit SHA1/6/30 parameters."""
    label = quote(f"{issuer}:{account}", safe=":@")
    params = urlencode(
        {"secret": secret, "issuer": issuer, "algorithm": "SHA1", "digits": TOTP_DIGITS, "period": TOTP_PERIOD},
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{params}"


def current_step(at: float | None = None) -> int:
    return int((time.time() if at is None else at) // TOTP_PERIOD)


def matching_step(secret: str, code: str, at: float | None = None) -> int | None:
    """The time step (within ±``TOTP_WINDOW`` of now) whose code equals ``code``, else ``None``.

    Every candidate is computed and compared in constant time, so timing does not say which step matched.
    """
    if len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD)
    now = current_step(at)
    found = None
    for step in range(now - TOTP_WINDOW, now + TOTP_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code) and found is None:
            found = step
    return found


def new_recovery_codes(count: int) -> list[str]:
    """Codes shown once, formatted ``XXXXX-XXXXX``."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def normalize_recovery_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch not in "- ")


def hash_recovery_code(code: str, salt: bytes) -> str:
    """Salted SHA-256 of the normalised code (codes carry 50 random bits; rate limits bound guessing)."""
    return hashlib.sha256(salt + normalize_recovery_code(code).encode()).hexdigest()


def qr_png_data_uri(data: str) -> str:
    img = qrcode.make(data, box_size=6, border=2)
    buf = io.BytesIO()
    img.save(buf)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def qr_svg(data: str) -> str:
    img = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=10, border=2)
    buf = io.BytesIO()
    img.save(buf)
    return buf.getvalue().decode()
