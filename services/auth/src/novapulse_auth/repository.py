"""MongoDB access of the auth service: every document shape (the ``*_doc`` constructors) and every read and
write. Member, invite and session queries are scoped by ``org_id``; only log-in (by e-mail) and token look-ups
(by hash) are global, since the caller has no organisation yet.

Times compared in queries are epoch seconds (``*_ts`` floats: they compare the same on MongoDB and on the
MongoDB-wire development server); other timestamps are aware UTC datetimes (:func:`novapulse_runtime.clock.utcnow`).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from novapulse_runtime.bus.envelope import new_event_id
from novapulse_runtime.clock import utcnow
from novapulse_runtime.documents import Doc, by_index

from .constants import (
    INVITES,
    LOGIN_BLOCKS,
    LOGIN_FAILED_TS,
    LOGIN_FAILURES,
    ORGS,
    RECOVERY_CODES,
    REFRESH_TOKENS,
    REGISTRATIONS,
    SESSIONS,
    SIGNING_KEYS,
    USERS,
    InviteStatus,
    KeyStatus,
    RegistrationStatus,
    UserStatus,
)

Session = Any  # pymongo AsyncClientSession or None


class EmailInUse(Exception):
    """:meth:`Repository.insert_user` met another user with the same e-mail address (unique index)."""


# --- document shapes ---------------------------------------------------------------------------------------


def user_doc(*, email: str, name: str, org_id: str, role: str, password_hash: str) -> Doc:
    """A new active user (``users``): ``_id`` a 32-hex id, ``email`` normalised by the caller, ``password_hash``
    an argon2id PHC string, MFA off, no wrong password counted yet (``login_failed_ts`` 0, see
    :meth:`Repository.note_login_failure`)."""
    created = utcnow()
    return {
        "_id": new_id(),
        "email": email,
        "name": name,
        "org_id": org_id,
        "role": role,
        "status": UserStatus.ACTIVE.value,
        "password_hash": password_hash,
        "mfa_enabled": False,
        LOGIN_FAILED_TS: 0.0,
        "created_at": created,
        "updated_at": created,
    }


def new_id() -> str:
    """A new document id: 32 lower-case hex digits, the shape ``api.py`` accepts in paths — a UUIDv7
    (RFC 9562 §5.7), so ids sort in creation order and cursor paging by id lists oldest or newest first."""
    return uuid.UUID(new_event_id()).hex


def org_doc(*, org_id: str, name: str, owner_id: str) -> Doc:
    """A new organisation (``organizations``) ``org_id`` owned by ``owner_id``."""
    return {"_id": org_id, "name": name, "created_at": utcnow(), "owner_id": owner_id}


def invite_doc(*, org_id: str, email: str, role: str, token_hash: str, invited_by: str, ttl: int) -> Doc:
    """A new pending invite (``invites``) expiring ``ttl`` seconds from now (``expires_at`` and, for queries,
    ``expires_ts`` in epoch seconds); only the token's SHA-256 is stored."""
    created = utcnow()
    expires_at = created + timedelta(seconds=ttl)
    return {
        "_id": new_id(),
        "org_id": org_id,
        "email": email,
        "role": role,
        "token_hash": token_hash,
        "invited_by": invited_by,
        "status": InviteStatus.PENDING.value,
        "created_at": created,
        "expires_at": expires_at,
        "expires_ts": expires_at.timestamp(),
    }


def registration_doc(
    *, token_hash: str, email: str, name: str, organization: str, password_hash: str, attempted: bool, ttl: int
) -> Doc:
    """A registration (``registrations``) expiring ``ttl`` seconds from now (MongoDB drops it then):
    ``pending`` with the password's hash, or, for a registered address (``attempted``), ``attempted`` with no
    hash (what was typed may be the owner's password) and never verifiable. ``failures`` counts wrong
    passwords at ``/register/verify``."""
    created = utcnow()
    expires_at = created + timedelta(seconds=ttl)
    return {
        "_id": new_id(),
        "token_hash": token_hash,
        "email": email,
        "name": name,
        "organization": organization,
        "password_hash": "" if attempted else password_hash,
        "status": (RegistrationStatus.ATTEMPTED if attempted else RegistrationStatus.PENDING).value,
        "failures": 0,
        "created_at": created,
        "expires_at": expires_at,
        "expires_ts": expires_at.timestamp(),
    }


def session_doc(*, user: Doc, amr: list[str], max_age: int, refresh_hash: str, refresh_ttl: int) -> Doc:
    """A new session (``sessions``, one refresh-token family) of ``user`` that dies ``max_age`` seconds from
    now whatever its activity; ``amr`` lists the authentication methods (RFC 8176).

    The family's first refresh token lives in the session itself (one insert per log-in instead of two):
    ``refresh_hash`` (its SHA-256, hex), ``refresh_expires_ts`` (epoch s, ``refresh_ttl`` seconds from now and
    never past the family's end) and ``refresh_used_at`` (``None`` until it is spent). The tokens that follow
    it are ``refresh_tokens`` documents (:func:`refresh_token_doc`)."""
    created = utcnow()
    expires_ts = created.timestamp() + max_age
    return {
        "_id": new_id(),
        "user_id": user["_id"],
        "org_id": user["org_id"],
        "amr": amr,
        "created_at": created,
        "expires_at": created + timedelta(seconds=max_age),
        "expires_ts": expires_ts,
        "revoked_at": None,
        "refresh_hash": refresh_hash,
        "refresh_expires_ts": min(created.timestamp() + refresh_ttl, expires_ts),
        "refresh_used_at": None,
    }


def refresh_token_doc(*, token_hash: str, sid: str, user: Doc, expires_at: datetime) -> Doc:
    """A new unused refresh token (``refresh_tokens``, ``_id`` its SHA-256) of session ``sid``."""
    return {
        "_id": token_hash,
        "sid": sid,
        "user_id": user["_id"],
        "org_id": user["org_id"],
        "created_at": utcnow(),
        "expires_at": expires_at,
        "expires_ts": expires_at.timestamp(),
        "used_at": None,
    }


def recovery_code_doc(*, org_id: str, user_id: str, salt: bytes, code_hash: str) -> Doc:
    """An unused recovery code (``recovery_codes``): its salted hash and the salt (hex)."""
    return {
        "_id": new_id(),
        "user_id": user_id,
        "org_id": org_id,
        "salt": salt.hex(),
        "hash": code_hash,
        "used_at": None,
        "created_at": utcnow(),
    }


def signing_key_doc(*, kid: str, generation: int, alg: str, public_jwk: Doc, private_enc: str, enc_key_id: str) -> Doc:
    """A new current signing key (``signing_keys``): its public JWK and its private half encrypted at rest
    (``private_enc``, under the encryption key ``enc_key_id``)."""
    return {
        "kid": kid,
        "generation": generation,
        "alg": alg,
        "public_jwk": public_jwk,
        "private_enc": private_enc,
        "enc_key_id": enc_key_id,
        "status": KeyStatus.CURRENT.value,
        "created_at": utcnow(),
    }


USER_SECRET_FIELDS = ("mfa_secret_enc", "mfa_pending_enc")
"""Fields of a user document encrypted with ``AUTH_ENCRYPTION_KEYS`` (noted by ``enc_key_id``)."""
KEY_SECRET_FIELDS = ("private_enc",)
"""Fields of a signing-key document encrypted with ``AUTH_ENCRYPTION_KEYS`` (noted by ``enc_key_id``)."""


class SigningKeyRepository:
    """The ``signing_keys`` collection: numbered by a unique ``generation`` (and a unique ``kid``), so two
    processes rotating at once cannot both insert the next one."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.keys: AsyncCollection[Doc] = db[SIGNING_KEYS]

    async def create_indexes(self) -> None:
        await self.keys.create_index("generation", unique=True)
        await self.keys.create_index("kid", unique=True)

    async def published(self, limit: int = 2) -> list[Doc]:
        """The ``limit`` newest keys that are not retired, newest first."""
        cursor = self.keys.find({"status": {"$ne": KeyStatus.RETIRED.value}}).sort("generation", -1)
        return await cursor.to_list(limit)

    async def insert(self, doc: Doc) -> bool:
        """Insert a key made by :func:`signing_key_doc`; ``False`` when its generation exists (another process
        rotated first)."""
        try:
            await self.keys.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def succeed(self, generation: int) -> None:
        """Key ``generation`` is now current: the one before becomes previous (published, signs nothing) and
        older ones are retired, their private halves erased."""
        await self.keys.update_one({"generation": generation - 1}, {"$set": {"status": KeyStatus.PREVIOUS.value}})
        await self.keys.update_many(
            {"generation": {"$lt": generation - 1}, "status": {"$ne": KeyStatus.RETIRED.value}},
            {"$set": {"status": KeyStatus.RETIRED.value, "private_enc": None}},
        )

    async def under_older_key(self, enc_key_id: str) -> list[Doc]:
        """Keys whose private half is encrypted under another key than ``enc_key_id``."""
        query = {"enc_key_id": {"$ne": enc_key_id}, "private_enc": {"$nin": [None, ""]}}
        return await self.keys.find(query).to_list(None)

    async def swap_secrets(self, key_doc_id: Any, old: Doc, new: Doc, enc_key_id: str) -> bool:
        """Compare-and-set the encrypted fields ``old`` → ``new`` (now under ``enc_key_id``); ``False`` when the
        document changed meanwhile."""
        result = await self.keys.update_one({"_id": key_doc_id, **old}, {"$set": {**new, "enc_key_id": enc_key_id}})
        return result.modified_count == 1


class MfaAttempt(NamedTuple):
    """The outcome of :meth:`Repository.reserve_mfa_attempt`: whether a slot of the user's wrong-code budget
    was taken, the start of the budget's window (epoch s, as stored) and the failures counted in it (the
    reservation included)."""

    reserved: bool
    window_start: float
    failures: int


class Repository:
    """All collections of the service's own database."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db
        self.users: AsyncCollection[Doc] = db[USERS]
        self.orgs: AsyncCollection[Doc] = db[ORGS]
        self.invites: AsyncCollection[Doc] = db[INVITES]
        self.sessions: AsyncCollection[Doc] = db[SESSIONS]
        self.refresh_tokens: AsyncCollection[Doc] = db[REFRESH_TOKENS]
        self.signing_keys = SigningKeyRepository(db)
        self.recovery_codes: AsyncCollection[Doc] = db[RECOVERY_CODES]
        self.registrations: AsyncCollection[Doc] = db[REGISTRATIONS]
        self.login_failures: AsyncCollection[Doc] = db[LOGIN_FAILURES]
        self.login_blocks: AsyncCollection[Doc] = db[LOGIN_BLOCKS]

    async def ensure_indexes(self) -> None:
        """Create the indexes every query of the service relies on (idempotent)."""
        await self.users.create_index("email", unique=True)
        await self.users.create_index([("org_id", 1), ("created_at", 1)])
        await self.invites.create_index("token_hash", unique=True)
        await self.invites.create_index([("org_id", 1), ("created_at", -1)])
        await self.sessions.create_index([("user_id", 1), ("revoked_at", 1)])
        await self.sessions.create_index("revoked_ts")
        await self.invites.create_index([("org_id", 1), ("invited_by", 1), ("status", 1)])
        await self.refresh_tokens.create_index("sid")
        await self.sessions.create_index("refresh_hash")  # a family's first refresh token (random: no collisions)
        await self.recovery_codes.create_index([("user_id", 1), ("used_at", 1)])
        await self.registrations.create_index("token_hash", unique=True)
        await self.registrations.create_index("expires_at", expireAfterSeconds=0)  # MongoDB drops expired ones
        await self.login_failures.create_index([("account", 1), ("ts", 1)])
        await self.login_failures.create_index("at", expireAfterSeconds=86400)

    # --- users and organisations -------------------------------------------------------------------------

    async def insert_org(self, doc: Doc, session: Session = None) -> None:
        await self.orgs.insert_one(doc, session=session)

    async def insert_user(self, doc: Doc, session: Session = None) -> None:
        """Insert a user made by :func:`user_doc`.

        :raises EmailInUse: the unique index on ``users.email`` refused it (registered meanwhile).
        """
        try:
            await self.users.insert_one(doc, session=session)
        except DuplicateKeyError as exc:
            raise EmailInUse(doc.get("email", "")) from exc

    async def user_by_email(self, email: str) -> Doc | None:
        return await self.users.find_one(by_index({"email": email}))  # every log-in: served by the unique index

    async def user(self, org_id: str, user_id: str) -> Doc | None:
        return await self.users.find_one(by_index({"_id": user_id, "org_id": org_id}))

    async def org(self, org_id: str) -> Doc | None:
        return await self.orgs.find_one({"_id": org_id})

    async def member_with_email(self, org_id: str, email: str) -> bool:
        # find_one, not count_documents(limit=1): nx-27017 runs that aggregate over the whole collection (issue 15)
        return await self.users.find_one(by_index({"org_id": org_id, "email": email}), {"_id": 1}) is not None

    async def email_taken(self, email: str) -> bool:
        return await self.users.find_one(by_index({"email": email}), {"_id": 1}) is not None

    async def members(self, org_id: str, *, after: str | None, fetch: int) -> list[Doc]:
        """Up to ``fetch`` users of the organisation with an id after ``after`` (all when ``None``), by id."""
        query: Doc = {"org_id": org_id}
        if after is not None:
            query["_id"] = {"$gt": after}
        return await self.users.find(query).sort("_id", 1).limit(fetch).to_list(fetch)

    async def set_password(self, org_id: str, user_id: str, password_hash: str, session: Session = None) -> bool:
        """Replace the user's password hash (argon2id PHC string)."""
        return await self.update_user(org_id, user_id, {"password_hash": password_hash}, session)

    async def set_pending_mfa(
        self, org_id: str, user_id: str, secret_enc: str, enc_key_id: str, expires_ts: float
    ) -> bool:
        """Store a pending TOTP secret (encrypted under ``enc_key_id``) until ``expires_ts`` (epoch seconds)."""
        return await self.update_user(
            org_id,
            user_id,
            {"mfa_pending_enc": secret_enc, "enc_key_id": enc_key_id, "mfa_pending_expires_ts": expires_ts},
        )

    async def users_under_older_key(self, enc_key_id: str) -> list[Doc]:
        """Users with a secret (:data:`USER_SECRET_FIELDS`) encrypted under another key than ``enc_key_id``."""
        query = {"enc_key_id": {"$ne": enc_key_id}, "$or": [{f: {"$nin": [None, ""]}} for f in USER_SECRET_FIELDS]}
        return await self.users.find(query).to_list(None)

    async def swap_user_secrets(self, user_id: str, old: Doc, new: Doc, enc_key_id: str) -> bool:
        """Compare-and-set the user's encrypted fields ``old`` → ``new`` (now under ``enc_key_id``); ``False``
        when the user changed meanwhile (a new set-up, say: left for the next round)."""
        result = await self.users.update_one({"_id": user_id, **old}, {"$set": {**new, "enc_key_id": enc_key_id}})
        return result.modified_count == 1

    async def update_user(self, org_id: str, user_id: str, changes: Doc, session: Session = None) -> bool:
        changes = {**changes, "updated_at": utcnow()}
        result = await self.users.update_one({"_id": user_id, "org_id": org_id}, {"$set": changes}, session=session)
        return result.matched_count == 1

    async def set_role(self, org_id: str, user_id: str, role: str, session: Session = None) -> Doc | None:
        return await self.users.find_one_and_update(
            {"_id": user_id, "org_id": org_id},
            {"$set": {"role": role, "updated_at": utcnow()}},
            return_document=ReturnDocument.AFTER,
            session=session,
        )

    async def disable_user(self, org_id: str, user_id: str, session: Session = None) -> bool:
        result = await self.users.update_one(
            {"_id": user_id, "org_id": org_id, "status": UserStatus.ACTIVE.value},
            {"$set": {"status": UserStatus.DISABLED.value, "updated_at": utcnow()}},
            session=session,
        )
        return result.modified_count == 1

    # --- sessions and refresh tokens ---------------------------------------------------------------------

    async def insert_session(self, doc: Doc) -> None:
        await self.sessions.insert_one(doc)

    async def session(self, sid: str) -> Doc | None:
        return await self.sessions.find_one({"_id": sid})

    async def revoke_session(self, sid: str, reason: str) -> bool:
        """Mark one session revoked (``revoked_ts`` in epoch seconds); False when it already was."""
        result = await self.sessions.update_one(
            {"_id": sid, "revoked_at": None},
            {"$set": {"revoked_at": utcnow(), "revoked_ts": time.time(), "revoke_reason": reason}},
        )
        return result.modified_count == 1

    async def revoke_user_sessions(
        self, org_id: str, user_id: str, reason: str, session: Session = None, *, keep: str | None = None
    ) -> list[str]:
        """Revoke every live session of a user (but ``keep``); returns the ids revoked, for the push."""
        query: Doc = {"user_id": user_id, "org_id": org_id, "revoked_at": None}
        docs = await self.sessions.find(query, {"_id": 1}, session=session).to_list(None)
        sids = [str(d["_id"]) for d in docs if d["_id"] != keep]
        if sids:
            await self.sessions.update_many(
                {"_id": {"$in": sids}, "org_id": org_id, "revoked_at": None},
                {"$set": {"revoked_at": utcnow(), "revoked_ts": time.time(), "revoke_reason": reason}},
                session=session,
            )
        return sids

    async def revoked_since(self, since_ts: float) -> list[Doc]:
        """Sessions revoked after ``since_ts`` (epoch seconds): ``{_id, revoked_ts}`` (the revocation sync)."""
        cursor = self.sessions.find({"revoked_ts": {"$gt": since_ts}}, {"_id": 1, "revoked_ts": 1})
        return await cursor.to_list(None)

    async def insert_refresh_token(self, doc: Doc) -> None:
        await self.refresh_tokens.insert_one(doc)

    async def use_refresh_token(self, token_hash: str) -> Doc | None:
        """Mark an unused refresh token used, atomically; ``None`` when it is unknown or already used."""
        return await self.refresh_tokens.find_one_and_update(
            {"_id": token_hash, "used_at": None}, {"$set": {"used_at": utcnow()}}
        )

    async def refresh_token(self, token_hash: str) -> Doc | None:
        return await self.refresh_tokens.find_one({"_id": token_hash})

    async def use_first_refresh_token(self, token_hash: str) -> Doc | None:
        """Mark a session's first refresh token (kept in the session, :func:`session_doc`) used, atomically: the
        session as it was, or ``None`` when no session has it unused."""
        return await self.sessions.find_one_and_update(
            by_index({"refresh_hash": token_hash, "refresh_used_at": None}), {"$set": {"refresh_used_at": utcnow()}}
        )

    async def refresh_token_session(self, token_hash: str) -> str | None:
        """The session id of a refresh token, used or not, wherever it is stored (``None`` when unknown)."""
        doc = await self.refresh_token(token_hash)
        if doc is not None:
            return str(doc["sid"])
        session = await self.sessions.find_one(by_index({"refresh_hash": token_hash}), {"_id": 1})
        return None if session is None else str(session["_id"])

    # --- invites -----------------------------------------------------------------------------------------

    async def insert_invite(self, doc: Doc, session: Session = None) -> None:
        await self.invites.insert_one(doc, session=session)

    async def revoke_pending_invites(self, org_id: str, email: str, session: Session = None) -> None:
        await self.invites.update_many(
            {"org_id": org_id, "email": email, "status": InviteStatus.PENDING.value},
            {"$set": {"status": InviteStatus.REVOKED.value, "revoked_at": utcnow()}},
            session=session,
        )

    async def invites_of(self, org_id: str, status: str | None, after: str | None, count: int) -> list[Doc]:
        """Up to ``count`` invites of ``org_id`` (only ``status`` when given), newest id first, after the id
        ``after``."""
        query: Doc = {"org_id": org_id}
        if status:
            query["status"] = status
        if after is not None:
            query["_id"] = {"$lt": after}
        cursor = self.invites.find(query).sort("_id", -1).limit(count)
        return await cursor.to_list(count)

    async def revoke_invite(self, org_id: str, invite_id: str) -> Doc | None:
        return await self.invites.find_one_and_update(
            {"_id": invite_id, "org_id": org_id, "status": InviteStatus.PENDING.value},
            {"$set": {"status": InviteStatus.REVOKED.value, "revoked_at": utcnow()}},
            return_document=ReturnDocument.AFTER,
        )

    async def revoke_invites_by(self, org_id: str, inviter_id: str, session: Session = None) -> int:
        """Revoke the pending invites an inviter sent (they were disabled or lost the right to invite)."""
        result = await self.invites.update_many(
            {"org_id": org_id, "invited_by": inviter_id, "status": InviteStatus.PENDING.value},
            {"$set": {"status": InviteStatus.REVOKED.value, "revoked_at": utcnow()}},
            session=session,
        )
        return result.modified_count

    async def invite(self, org_id: str, invite_id: str) -> Doc | None:
        return await self.invites.find_one({"_id": invite_id, "org_id": org_id})

    async def claim_invite(self, token_hash: str) -> Doc | None:
        """Atomically take a pending, unexpired invite; ``None`` when it is unknown, used, revoked or expired."""
        return await self.invites.find_one_and_update(
            {"token_hash": token_hash, "status": InviteStatus.PENDING.value, "expires_ts": {"$gt": time.time()}},
            {"$set": {"status": InviteStatus.ACCEPTED.value, "accepted_at": utcnow()}},
            return_document=ReturnDocument.AFTER,
        )

    async def release_invite(self, invite_id: str) -> None:
        await self.invites.update_one(
            {"_id": invite_id, "status": InviteStatus.ACCEPTED.value},
            {"$set": {"status": InviteStatus.PENDING.value, "accepted_at": None}},
        )

    async def revoke_claimed_invite(self, invite_id: str) -> None:
        """Revoke an invite taken by :meth:`claim_invite` whose acceptance was refused for good."""
        await self.invites.update_one(
            {"_id": invite_id, "status": InviteStatus.ACCEPTED.value},
            {"$set": {"status": InviteStatus.REVOKED.value, "revoked_at": utcnow(), "accepted_at": None}},
        )

    async def mark_invite_accepted_by(self, invite_id: str, user_id: str, session: Session = None) -> None:
        await self.invites.update_one({"_id": invite_id}, {"$set": {"accepted_by": user_id}}, session=session)

    # --- recovery codes ----------------------------------------------------------------------------------

    async def replace_recovery_codes(self, org_id: str, user_id: str, docs: list[Doc], session: Session = None) -> None:
        await self.recovery_codes.delete_many({"user_id": user_id, "org_id": org_id}, session=session)
        if docs:
            await self.recovery_codes.insert_many(docs, session=session)

    async def unused_recovery_codes(self, org_id: str, user_id: str) -> list[Doc]:
        return await self.recovery_codes.find({"user_id": user_id, "org_id": org_id, "used_at": None}).to_list(50)

    async def use_recovery_code(self, code_id: str) -> bool:
        result = await self.recovery_codes.update_one(
            {"_id": code_id, "used_at": None}, {"$set": {"used_at": utcnow()}}
        )
        return result.modified_count == 1

    # --- MFA state on the user -----------------------------------------------------------------------------

    async def claim_totp_step(self, org_id: str, user_id: str, step: int) -> bool:
        """Record ``step`` as the user's last accepted TOTP step if it is later than the one stored (RFC 6238
        §5.2: a code is accepted once). Atomic per document, so of two parallel claims one wins. The field
        starts at -1 (two steps: the MongoDB-wire test server has no ``$not``)."""
        await self.users.update_one(
            {"_id": user_id, "org_id": org_id, "totp_last_step": {"$exists": False}}, {"$set": {"totp_last_step": -1}}
        )
        result = await self.users.update_one(
            {"_id": user_id, "org_id": org_id, "totp_last_step": {"$lt": step}}, {"$set": {"totp_last_step": step}}
        )
        return result.modified_count == 1

    # The wrong-code budget: ``mfa_failures`` counted since ``mfa_failures_since_ts`` (epoch s). Kept on the user's
    # document, not in Redis, so a flush or a restart without persistence does not hand out fresh guesses.

    async def reserve_mfa_attempt(
        self, org_id: str, user_id: str, *, limit: int, window: float, now_ts: float
    ) -> MfaAttempt | None:
        """Count one code check against the user's budget of ``limit`` wrong codes per ``window`` seconds,
        *before* the code is checked, so parallel checks cannot overshoot it: each is one conditional ``$inc``
        that matches only while the window holds fewer than ``limit`` (or one ``$set`` that starts a new
        window when the last one is over). ``reserved=False`` when the budget is spent (the window's start
        tells when it ends); ``None`` when there is no such user in ``org_id``. A right code gives its slot
        back (:meth:`release_mfa_attempt`). The window starts at the first failure, as a fixed window."""
        scope = {"_id": user_id, "org_id": org_id}
        fields = {"mfa_failures": 1, "mfa_failures_since_ts": 1}
        for _ in range(8):  # each round trip ends unless a parallel request changed the window meanwhile
            doc = await self.users.find_one_and_update(
                {**scope, "mfa_failures_since_ts": {"$gt": now_ts - window}, "mfa_failures": {"$lt": limit}},
                {"$inc": {"mfa_failures": 1}},
                projection=fields,
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                doc = await self.users.find_one_and_update(
                    {**scope, "mfa_failures_since_ts": {"$lte": now_ts - window}},
                    {"$set": {"mfa_failures_since_ts": now_ts, "mfa_failures": 1}},
                    projection=fields,
                    return_document=ReturnDocument.AFTER,
                )
            if doc is not None:
                return MfaAttempt(True, float(doc["mfa_failures_since_ts"]), int(doc["mfa_failures"]))
            doc = await self.users.find_one(scope, fields)
            if doc is None:
                return None
            if "mfa_failures_since_ts" not in doc:  # first check ever: an empty, expired window (no ``$not``)
                await self.users.update_one(
                    {**scope, "mfa_failures_since_ts": {"$exists": False}},
                    {"$set": {"mfa_failures_since_ts": 0.0, "mfa_failures": 0}},
                )
                continue
            since, failures = float(doc["mfa_failures_since_ts"]), int(doc["mfa_failures"])
            if since > now_ts - window and failures >= limit:
                return MfaAttempt(False, since, failures)
        # Parallel requests kept changing the window under this one: refuse for a second rather than check a
        # code without counting it.
        return MfaAttempt(False, now_ts - window + 1, limit)

    async def release_mfa_attempt(self, org_id: str, user_id: str, window_start: float) -> None:
        """Give back the slot a right code reserved in the window that started at ``window_start``. When it
        was the window's only one, the window is emptied, so the next wrong code starts a new one (as if
        the right code had never counted); a window that has since been replaced is left alone."""
        scope = {"_id": user_id, "org_id": org_id, "mfa_failures_since_ts": window_start}
        result = await self.users.update_one(
            {**scope, "mfa_failures": 1}, {"$set": {"mfa_failures_since_ts": 0.0, "mfa_failures": 0}}
        )
        if result.modified_count == 0:
            await self.users.update_one({**scope, "mfa_failures": {"$gt": 1}}, {"$inc": {"mfa_failures": -1}})

    async def enable_mfa(
        self, org_id: str, user_id: str, secret_enc: str, enc_key_id: str, session: Session = None
    ) -> bool:
        """Turn MFA on unless it already is (two racing enables cannot both win)."""
        result = await self.users.update_one(
            {"_id": user_id, "org_id": org_id, "mfa_enabled": {"$ne": True}},
            {
                "$set": {
                    "mfa_enabled": True,
                    "mfa_secret_enc": secret_enc,
                    "enc_key_id": enc_key_id,
                    "mfa_pending_enc": None,
                    "mfa_pending_expires_ts": None,
                    "mfa_enabled_at": utcnow(),
                    "updated_at": utcnow(),
                }
            },
            session=session,
        )
        return result.modified_count == 1

    async def disable_mfa(self, org_id: str, user_id: str, session: Session = None) -> bool:
        result = await self.users.update_one(
            {"_id": user_id, "org_id": org_id, "mfa_enabled": True},
            {
                "$set": {
                    "mfa_enabled": False,
                    "mfa_secret_enc": None,
                    "mfa_pending_enc": None,
                    "mfa_pending_expires_ts": None,
                    "updated_at": utcnow(),
                }
            },
            session=session,
        )
        if result.modified_count == 1:
            await self.recovery_codes.delete_many({"user_id": user_id, "org_id": org_id}, session=session)
            return True
        return False

    # --- registrations (e-mail verification) ----------------------------------------------------------------

    async def insert_registration(self, doc: Doc, session: Session = None) -> None:
        await self.registrations.insert_one(doc, session=session)

    async def take_registration_attempt(self, token_hash: str, max_failures: int) -> Doc | None:
        """Take one password check of a pending, unexpired registration that has fewer than ``max_failures``
        wrong passwords (``failures`` counts it before the check, so parallel guesses cannot overshoot);
        ``None`` when unknown, used, expired or void."""
        return await self.registrations.find_one_and_update(
            {
                "token_hash": token_hash,
                "status": RegistrationStatus.PENDING.value,
                "expires_ts": {"$gt": time.time()},
                "failures": {"$lt": max_failures},
            },
            {"$inc": {"failures": 1}},
            return_document=ReturnDocument.AFTER,
        )

    async def void_registration(self, registration_id: str) -> None:
        """A registration whose password was guessed wrong too often can never be verified."""
        await self.registrations.update_one(
            {"_id": registration_id, "status": RegistrationStatus.PENDING.value},
            {"$set": {"status": RegistrationStatus.VOID.value}},
        )

    async def claim_registration(self, registration_id: str) -> Doc | None:
        """Atomically spend a pending, unexpired registration whose password was right (giving back the check's
        slot); ``None`` when it was spent meanwhile or expired."""
        return await self.registrations.find_one_and_update(
            {"_id": registration_id, "status": RegistrationStatus.PENDING.value, "expires_ts": {"$gt": time.time()}},
            {
                "$set": {"status": RegistrationStatus.VERIFIED.value, "verified_ts": time.time()},
                "$inc": {"failures": -1},
            },
            return_document=ReturnDocument.AFTER,
        )

    async def release_registration(self, registration_id: str) -> None:
        """Make a claimed registration pending again (its account could not be created): the link works again."""
        await self.registrations.update_one(
            {"_id": registration_id, "status": RegistrationStatus.VERIFIED.value},
            {"$set": {"status": RegistrationStatus.PENDING.value, "verified_ts": None}},
        )

    # --- log-in failures and blocks (lockout.py) ---------------------------------------------------------------

    async def insert_login_failure(self, failure_id: str, account: str, pair: str, ts: float) -> None:
        """Count one (presumed) wrong password of ``account`` from client ``pair`` (both hashes) at ``ts``
        (epoch seconds); MongoDB drops it after a day (``at``)."""
        await self.login_failures.insert_one(
            {"_id": failure_id, "account": account, "pair": pair, "ts": ts, "at": utcnow()}
        )

    async def login_failures_since(
        self, account: str, since: float, limit: int, pair: str | None = None, exclude: str | None = None
    ) -> list[Doc]:
        """The newest ``limit`` failures of the account (of one client when ``pair`` is given) after ``since``
        (epoch s), oldest first; ``exclude``: the ``_id`` of one failure left out (an attempt under way)."""
        query: Doc = {"account": account, "ts": {"$gt": since}}
        if pair is not None:
            query["pair"] = pair
        if exclude is not None:
            query["_id"] = {"$ne": exclude}
        cursor = self.login_failures.find(by_index(query)).sort("ts", -1).limit(limit)
        return list(reversed(await cursor.to_list(limit)))

    async def delete_login_failure(self, failure_id: str) -> None:
        await self.login_failures.delete_one({"_id": failure_id})

    async def forget_login_failures(self, account: str, pair: str) -> None:
        await self.login_failures.delete_many(by_index({"account": account, "pair": pair}))

    async def prune_login_failures(self, account: str, before: float) -> None:
        await self.login_failures.delete_many(by_index({"account": account, "ts": {"$lte": before}}))

    async def claim_login_block(self, key: str, until: float) -> bool:
        """Start the block ``key`` until ``until`` (epoch s) unless one is in force: ``True`` for the caller
        that started it (so exactly one event per block, also across processes)."""
        try:
            await self.login_blocks.insert_one({"_id": key, "until_ts": until})
            return True
        except DuplicateKeyError:
            result = await self.login_blocks.update_one(
                {"_id": key, "until_ts": {"$lte": time.time()}}, {"$set": {"until_ts": until}}
            )
            return result.modified_count == 1

    async def remember_client(
        self, org_id: str, user_id: str, known: list[str] | None, *, failed_ts: float | None = None
    ) -> None:
        """Store the user's ``known_clients`` (unless ``None``) and, with ``failed_ts`` (epoch s), raise
        ``login_failed_ts`` to at least it (a user stored before that field existed gets it here)."""
        update: Doc = {}
        if known is not None:
            update["$set"] = {"known_clients": known}
        if failed_ts is not None:
            update["$max"] = {LOGIN_FAILED_TS: failed_ts}
        if update:
            await self.users.update_one({"_id": user_id, "org_id": org_id}, update)

    async def note_login_failure(self, email: str, ts: float) -> None:
        """Raise the account's ``login_failed_ts`` (epoch seconds of the newest attempt counted as a failure
        document, :mod:`.lockout`) to at least ``ts``. The same one command whether or not a user has this
        normalised ``email`` (it then matches nothing), so an unknown address costs what a registered one does."""
        await self.users.update_one(by_index({"email": email}), {"$max": {LOGIN_FAILED_TS: ts}})
