"""Sessions: one refresh-token family per log-in. Refresh tokens rotate on every use; presenting a used one
revokes the whole family (the newest token too); a family dies at an absolute age whatever its activity.

Revoking a session (logout, password change, disable, demotion, MFA reset, refresh reuse) also kills its
access tokens everywhere: the session is marked in MongoDB (``revoked_ts``, the truth), then pushed to every
service's token verifier through Redis (``novapulse_runtime.revocation``; honoured within 1 s). The worker's
:func:`sync_revocations` rewrites recent revocations into Redis when Redis lost them."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from novapulse_runtime.clock import utcnow
from novapulse_runtime.revocation import RevocationList, publish_revocations, restore_revocations

from .constants import REFRESH_TOKEN_PREFIX, REVOCATION_MARGIN, UserStatus
from .errors import AccountChangedDuringLogin, InvalidRefreshToken
from .opaque import new_token, token_hash
from .repository import Repository, refresh_token_doc, session_doc
from .signing import AccessToken, KeyRing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenPair:
    """A new access token (JWT, ``expires_in`` seconds) and refresh token (opaque, ``rt_`` prefix) of session
    ``sid``.
    """

    access_token: str
    refresh_token: str
    expires_in: int
    sid: str


class SessionService:
    """Sessions and their revocation. ``revocations`` is this process's verifier copy (it learns its own
    revocations at once); ``redis`` carries them to every other verifier."""

    def __init__(
        self,
        repo: Repository,
        keys: KeyRing,
        redis: Redis,
        revocations: RevocationList | None,
        *,
        refresh_ttl: int,
        session_max_age: int,
        namespace: str,
    ) -> None:
        """:param refresh_ttl: seconds a refresh token lives (``REFRESH_TOKEN_TTL``), never past its family's end.
        :param session_max_age: seconds a session (refresh family) lives whatever its activity (``SESSION_MAX_AGE``).
        :param namespace: the Redis namespace of the revocation list verifiers read.
        """
        self._repo = repo
        self._keys = keys
        self.redis = redis
        self._revocations = revocations
        self._refresh_ttl = refresh_ttl
        self._max_age = session_max_age
        self.namespace = namespace

    def revocation_expiry(self, revoked_ts: float) -> float:
        """Epoch seconds after which no access token of a session revoked at ``revoked_ts`` (epoch seconds) is
        still valid: the access-token lifetime plus ``REVOCATION_MARGIN`` (60 s of leeway and clock skew).
        """
        return revoked_ts + self._keys.access_ttl + REVOCATION_MARGIN

    async def announce(self, sids: list[str]) -> None:
        """Push sessions already marked revoked in MongoDB to every verifier (this process's at once). A Redis
        failure is logged, not raised: the database change stands, verifiers that cannot reach Redis fail
        closed, and the worker's :func:`sync_revocations` rewrites the entry when Redis is back.

        :param sids: session ids.
        """
        if not sids:
            return
        entries = dict.fromkeys(sids, self.revocation_expiry(time.time()))
        if self._revocations is not None:
            self._revocations.add(entries)
        try:
            await publish_revocations(self.redis, self.namespace, entries)
        except (RedisError, OSError) as exc:
            log.warning("revocation push failed; the worker will restore it", extra={"error": repr(exc)})

    async def revoke(self, sid: str, reason: str) -> None:
        """Revoke one session: refresh refused at once, its access tokens refused everywhere within 1 s."""
        await self._repo.revoke_session(sid, reason)
        await self.announce([sid])

    async def revoke_user(self, org_id: str, user_id: str, reason: str, *, keep: str | None = None) -> list[str]:
        """Revoke every live session of a user (but ``keep``) and push the revocation.

        :param reason: recorded on the sessions (``revoke_reason``).
        :returns: the session ids revoked.
        """
        sids = await self._repo.revoke_user_sessions(org_id, user_id, reason, keep=keep)
        await self.announce(sids)
        return sids

    async def start(self, user: dict[str, Any], amr: list[str]) -> TokenPair:
        """A new session (refresh family) for ``user`` with its first token pair; the first refresh token is stored
        (hashed) in the session document itself, so a log-in writes one document. A disable, demotion or password
        change that ran while this log-in was in flight did not see the new session, so the user is read again
        once it exists; if they changed, the session is revoked.

        :param amr: authentication methods (RFC 8176: ``pwd``, ``otp``, ``mfa``), carried by the access tokens.
        :raises AccountChangedDuringLogin: (401) the user changed during the log-in.
        """
        refresh = new_token(REFRESH_TOKEN_PREFIX)
        doc = session_doc(
            user=user, amr=amr, max_age=self._max_age, refresh_hash=token_hash(refresh), refresh_ttl=self._refresh_ttl
        )
        sid = doc["_id"]
        await self._repo.insert_session(doc)
        # A disable, demotion or password change that ran while this log-in was in flight did not see this
        # session: re-read the user now that the session exists, and give up if they changed.
        current = await self._repo.user(user["org_id"], user["_id"])
        if (
            current is None
            or current.get("status") != UserStatus.ACTIVE.value
            or current.get("role") != user.get("role")
            or current.get("password_hash") != user.get("password_hash")
        ):
            await self.revoke(sid, "user-changed-during-login")
            raise AccountChangedDuringLogin()
        access = await self._access(current, sid, amr)
        return TokenPair(access.token, refresh, access.expires_in, sid)

    async def _access(self, user: dict[str, Any], sid: str, amr: list[str]) -> AccessToken:
        return await self._keys.issue(user_id=user["_id"], org_id=user["org_id"], role=user["role"], amr=amr, sid=sid)

    async def _pair(self, user: dict[str, Any], sid: str, amr: list[str], family_expires: datetime) -> TokenPair:
        refresh = new_token(REFRESH_TOKEN_PREFIX)
        issued = utcnow()
        expires = min(issued + timedelta(seconds=self._refresh_ttl), family_expires)
        await self._repo.insert_refresh_token(
            refresh_token_doc(token_hash=token_hash(refresh), sid=sid, user=user, expires_at=expires)
        )
        access = await self._access(user, sid, amr)
        return TokenPair(access.token, refresh, access.expires_in, sid)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token: the presented one is spent and a new pair is returned in the same family (OAuth
        2.0 Security BCP, RFC 9700 §4.14.2). Presenting a spent token revokes the whole family (reuse detection).

        :raises InvalidRefreshToken: (401) unknown, spent, expired, its session revoked or past its maximum age,
            or its user disabled (the session is then revoked).
        """
        hashed = token_hash(refresh_token)
        # Tokens issued by a refresh (and every token stored before first tokens moved into the session) are
        # refresh_tokens documents; a family's first token is in its session.
        doc = await self._repo.use_refresh_token(hashed)
        session = None
        if doc is None:
            session = await self._repo.use_first_refresh_token(hashed)
            if session is not None:
                doc = {
                    "sid": session["_id"],
                    "user_id": session["user_id"],
                    "org_id": session["org_id"],
                    "expires_ts": session["refresh_expires_ts"],
                }
        if doc is None:
            spent = await self._repo.refresh_token_session(hashed)
            if spent is not None:
                await self.revoke(spent, "refresh-token-reuse")
                log.warning("refresh token reuse: family revoked", extra={"sid": spent})
            raise InvalidRefreshToken()
        if session is None:
            session = await self._repo.session(doc["sid"])
        # Expiry is compared on epoch seconds: numbers compare the same on every MongoDB-wire server.
        current = time.time()
        if (
            session is None
            or session.get("revoked_at") is not None
            or float(session["expires_ts"]) <= current
            or float(doc["expires_ts"]) <= current
        ):
            raise InvalidRefreshToken()
        user = await self._repo.user(doc["org_id"], doc["user_id"])
        if user is None or user.get("status") != UserStatus.ACTIVE.value:
            await self.revoke(doc["sid"], "user-disabled")
            raise InvalidRefreshToken()
        family_expires = datetime.fromtimestamp(float(session["expires_ts"]), UTC)
        return await self._pair(user, doc["sid"], list(session.get("amr", ["pwd"])), family_expires)

    async def logout(self, sid: str, user_id: str) -> None:
        """Revoke the caller's session (RFC 7009 in spirit: its refresh and access tokens both stop working); a
        session of someone else is left alone. Raises nothing.
        """
        session = await self._repo.session(sid)
        if session is not None and session["user_id"] == user_id:
            await self.revoke(sid, "logout")


async def sync_revocations(repo: Repository, sessions: SessionService) -> int:
    """Rewrite into Redis the revocations of the last access-token lifetime that it lost (restart without
    persistence, ``FLUSHALL``, a failed push); verifiers reload when any was missing.

    :returns: how many entries were rewritten.
    """
    since = time.time() - sessions.revocation_expiry(0.0)
    docs = await repo.revoked_since(since)
    entries = {str(d["_id"]): sessions.revocation_expiry(float(d["revoked_ts"])) for d in docs}
    return await restore_revocations(sessions.redis, sessions.namespace, entries)
