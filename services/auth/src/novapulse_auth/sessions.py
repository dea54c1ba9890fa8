"""Sessions: one refresh-token family per log-in. Refresh tokens rotate on every use; presenting a used one
revokes the whole family (the newest token too); a family dies at an absolute age whatever its activity."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from novapulse_runtime.problems import ProblemError

from .constants import REFRESH_TOKEN_PREFIX, UserStatus
from .opaque import new_token, token_hash
from .repository import Repository, now
from .signing import KeyRing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    sid: str


def _invalid_refresh() -> ProblemError:
    return ProblemError(401, "The refresh token is invalid, expired or revoked")


class SessionService:
    def __init__(self, repo: Repository, keys: KeyRing, *, refresh_ttl: int, session_max_age: int) -> None:
        self._repo = repo
        self._keys = keys
        self._refresh_ttl = refresh_ttl
        self._max_age = session_max_age

    async def start(self, user: dict[str, Any], amr: list[str]) -> TokenPair:
        """A new session (refresh family) for ``user``, with its first token pair."""
        sid = uuid.uuid4().hex
        created = now()
        await self._repo.insert_session(
            {
                "_id": sid,
                "user_id": user["_id"],
                "org_id": user["org_id"],
                "amr": amr,
                "created_at": created,
                "expires_at": created + timedelta(seconds=self._max_age),
                "expires_ts": created.timestamp() + self._max_age,
                "revoked_at": None,
            }
        )
        return await self._pair(user, sid, amr, created + timedelta(seconds=self._max_age))

    async def _pair(self, user: dict[str, Any], sid: str, amr: list[str], family_expires: datetime) -> TokenPair:
        refresh = new_token(REFRESH_TOKEN_PREFIX)
        issued = now()
        expires = min(issued + timedelta(seconds=self._refresh_ttl), family_expires)
        await self._repo.insert_refresh_token(
            {
                "_id": token_hash(refresh),
                "sid": sid,
                "user_id": user["_id"],
                "org_id": user["org_id"],
                "created_at": issued,
                "expires_at": expires,
                "expires_ts": expires.timestamp(),
                "used_at": None,
            }
        )
        access = await self._keys.issue(user_id=user["_id"], org_id=user["org_id"], role=user["role"], amr=amr, sid=sid)
        return TokenPair(access.token, refresh, access.expires_in, sid)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate: the presented token is spent and a new pair is returned in the same family."""
        hashed = token_hash(refresh_token)
        doc = await self._repo.use_refresh_token(hashed)
        if doc is None:
            spent = await self._repo.refresh_token(hashed)
            if spent is not None:
                await self._repo.revoke_session(spent["sid"], "refresh-token-reuse")
                log.warning("refresh token reuse: family revoked", extra={"sid": spent["sid"]})
            raise _invalid_refresh()
        session = await self._repo.session(doc["sid"])
        # Expiry is compared on epoch seconds: numbers compare the same on every MongoDB-wire server.
        current = time.time()
        if (
            session is None
            or session.get("revoked_at") is not None
            or float(session["expires_ts"]) <= current
            or float(doc["expires_ts"]) <= current
        ):
            raise _invalid_refresh()
        user = await self._repo.user(doc["org_id"], doc["user_id"])
        if user is None or user.get("status") != UserStatus.ACTIVE.value:
            await self._repo.revoke_session(doc["sid"], "user-disabled")
            raise _invalid_refresh()
        family_expires = datetime.fromtimestamp(float(session["expires_ts"]), UTC)
        return await self._pair(user, doc["sid"], list(session.get("amr", ["pwd"])), family_expires)

    async def logout(self, sid: str, user_id: str) -> None:
        session = await self._repo.session(sid)
        if session is not None and session["user_id"] == user_id:
            await self._repo.revoke_session(sid, "logout")
