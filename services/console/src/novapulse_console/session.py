"""The console's session: one encrypted, authenticated cookie (Fernet under ``CONSOLE_SESSION_KEYS``).

Every visitor gets one on their first page, anonymous until they sign in, so that every form — the sign-in
form included — carries a CSRF token bound to it (synchronizer token pattern, OWASP CSRF cheat sheet). The
cookie holds the user's access and refresh tokens: it is ``HttpOnly`` (scripts never see it), ``SameSite=Lax``
and, with ``CONSOLE_COOKIE_SECURE``, ``Secure`` with the ``__Host-`` prefix. A cookie older than
``CONSOLE_SESSION_MAX_AGE`` (its encryption time, Fernet's timestamp) or that no key opens is ignored.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from novapulse_runtime.secretbox import SecretBox, SecretBoxError

from .constants import COOKIE_NAME, SECURE_COOKIE_NAME

SESSION_KEY = web.AppKey("console_session_codec", object)


class Session(BaseModel):
    """What the cookie carries. ``access_token`` empty: anonymous (only ``csrf`` and maybe a pending MFA
    challenge)."""

    csrf: str
    started_at: float
    access_token: str = ""
    refresh_token: str = ""
    access_expires_at: float = 0.0
    user_id: str = ""
    org_id: str = ""
    org_name: str = ""
    email: str = ""
    name: str = ""
    role: str = ""
    mfa_enabled: bool = False
    operator: bool = False
    mfa_token: str = ""
    """A pending MFA challenge (between the password and the code)."""
    flash: list[tuple[str, str]] = []
    """Messages for the next page: ``(kind, text)``, kind ``ok`` | ``error`` | ``warning``."""

    @property
    def signed_in(self) -> bool:
        return bool(self.access_token)

    @property
    def manager(self) -> bool:
        return self.role in ("owner", "admin")

    @classmethod
    def anonymous(cls) -> Session:
        return cls(csrf=secrets.token_urlsafe(32), started_at=time.time())

    def check_csrf(self, presented: str) -> bool:
        """Constant-time comparison of a presented token with the session's."""
        return bool(presented) and hmac.compare_digest(presented.encode(), self.csrf.encode())

    def flash_message(self, kind: str, text: str) -> None:
        """Keep a message for the next page (the last five). The middleware stores a session holding one, so a
        handler need not mark the session changed for it."""
        self.flash = [*self.flash[-4:], (kind, text)]


class SessionCodec:
    """Session ⇄ cookie value, and the cookie's attributes."""

    def __init__(self, box: SecretBox, max_age: int, secure: bool) -> None:
        self.box = box
        self.max_age = max_age
        self.secure = secure
        self.name = SECURE_COOKIE_NAME if secure else COOKIE_NAME

    def load(self, request: web.Request) -> Session | None:
        raw = request.cookies.get(self.name, "")
        if not raw or len(raw) > 8192:
            return None
        try:
            data: Any = json.loads(self.box.decrypt(raw, ttl=self.max_age))
            session = Session.model_validate(data)
        except (SecretBoxError, ValueError, ValidationError):
            return None
        if time.time() - session.started_at > self.max_age:
            return None
        return session

    def store(self, response: web.StreamResponse, session: Session) -> None:
        value = self.box.encrypt(session.model_dump_json())
        response.set_cookie(
            self.name,
            value,
            max_age=self.max_age,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="Lax",
        )

    def clear(self, response: web.StreamResponse) -> None:
        response.del_cookie(self.name, path="/", secure=self.secure, httponly=True, samesite="Lax")
