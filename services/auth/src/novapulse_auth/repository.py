"""MongoDB access of the auth service. Member, invite and session queries are scoped by ``org_id``; only
log-in (by e-mail) and token look-ups (by hash) are global, since the caller has no organisation yet."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from novapulse_runtime.clock import utcnow
from novapulse_runtime.documents import Doc

from .constants import (
    INVITES,
    LOGIN_BLOCKS,
    LOGIN_FAILURES,
    ORGS,
    RECOVERY_CODES,
    REFRESH_TOKENS,
    REGISTRATIONS,
    SESSIONS,
    SIGNING_KEYS,
    USERS,
    InviteStatus,
    UserStatus,
)

Session = Any  # pymongo AsyncClientSession or None


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
        self.signing_keys: AsyncCollection[Doc] = db[SIGNING_KEYS]
        self.recovery_codes: AsyncCollection[Doc] = db[RECOVERY_CODES]
        self.registrations: AsyncCollection[Doc] = db[REGISTRATIONS]
        self.login_failures: AsyncCollection[Doc] = db[LOGIN_FAILURES]
        self.login_blocks: AsyncCollection[Doc] = db[LOGIN_BLOCKS]

    async def create_indexes(self) -> None:
        await self.users.create_index("email", unique=True)
        await self.users.create_index([("org_id", 1), ("created_at", 1)])
        await self.invites.create_index("token_hash", unique=True)
        await self.invites.create_index([("org_id", 1), ("created_at", -1)])
        await self.sessions.create_index([("user_id", 1), ("revoked_at", 1)])
        await self.sessions.create_index("revoked_ts")
        await self.invites.create_index([("org_id", 1), ("invited_by", 1), ("status", 1)])
        await self.refresh_tokens.create_index("sid")
        await self.recovery_codes.create_index([("user_id", 1), ("used_at", 1)])
        await self.registrations.create_index("token_hash", unique=True)
        await self.registrations.create_index("expires_at", expireAfterSeconds=0)  # MongoDB drops expired ones
        await self.login_failures.create_index([("account", 1), ("ts", 1)])
        await self.login_failures.create_index("at", expireAfterSeconds=86400)

    # --- users and organisations -------------------------------------------------------------------------

    async def insert_org(self, doc: Doc, session: Session = None) -> None:
        await self.orgs.insert_one(doc, session=session)

    async def insert_user(self, doc: Doc, session: Session = None) -> None:
        await self.users.insert_one(doc, session=session)

    async def user_by_email(self, email: str) -> Doc | None:
        return await self.users.find_one({"email": email})

    async def user(self, org_id: str, user_id: str) -> Doc | None:
        return await self.users.find_one({"_id": user_id, "org_id": org_id})

    async def org(self, org_id: str) -> Doc | None:
        return await self.orgs.find_one({"_id": org_id})

    async def member_with_email(self, org_id: str, email: str) -> bool:
        return await self.users.count_documents({"org_id": org_id, "email": email}, limit=1) > 0

    async def email_taken(self, email: str) -> bool:
        return await self.users.count_documents({"email": email}, limit=1) > 0

    async def members(self, org_id: str, *, after: str | None, fetch: int) -> list[Doc]:
        """Up to ``fetch`` users of the organisation with an id after ``after`` (all when ``None``), by id."""
        query: Doc = {"org_id": org_id}
        if after is not None:
            query["_id"] = {"$gt": after}
        return await self.users.find(query).sort("_id", 1).limit(fetch).to_list(fetch)

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

    # --- invites -----------------------------------------------------------------------------------------

    async def insert_invite(self, doc: Doc, session: Session = None) -> None:
        await self.invites.insert_one(doc, session=session)

    async def revoke_pending_invites(self, org_id: str, email: str, session: Session = None) -> None:
        await self.invites.update_many(
            {"org_id": org_id, "email": email, "status": InviteStatus.PENDING.value},
            {"$set": {"status": InviteStatus.REVOKED.value, "revoked_at": utcnow()}},
            session=session,
        )

    async def invites_of(self, org_id: str, status: str | None, limit: int, offset: int) -> list[Doc]:
        query: Doc = {"org_id": org_id}
        if status:
            query["status"] = status
        cursor = self.invites.find(query).sort("created_at", -1).skip(offset).limit(limit)
        return await cursor.to_list(limit)

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
                "status": "pending",
                "expires_ts": {"$gt": time.time()},
                "failures": {"$lt": max_failures},
            },
            {"$inc": {"failures": 1}},
            return_document=ReturnDocument.AFTER,
        )

    async def void_registration(self, registration_id: str) -> None:
        """A registration whose password was guessed wrong too often can never be verified."""
        await self.registrations.update_one({"_id": registration_id, "status": "pending"}, {"$set": {"status": "void"}})

    async def claim_registration(self, registration_id: str) -> Doc | None:
        """Atomically spend a pending, unexpired registration whose password was right (giving back the check's
        slot); ``None`` when it was spent meanwhile or expired."""
        return await self.registrations.find_one_and_update(
            {"_id": registration_id, "status": "pending", "expires_ts": {"$gt": time.time()}},
            {"$set": {"status": "verified", "verified_ts": time.time()}, "$inc": {"failures": -1}},
            return_document=ReturnDocument.AFTER,
        )

    async def release_registration(self, registration_id: str) -> None:
        """Make a claimed registration pending again (its account could not be created): the link works again."""
        await self.registrations.update_one(
            {"_id": registration_id, "status": "verified"}, {"$set": {"status": "pending", "verified_ts": None}}
        )

    # --- log-in failures and blocks (lockout.py) ---------------------------------------------------------------

    async def insert_login_failure(self, doc: Doc) -> None:
        await self.login_failures.insert_one(doc)

    async def login_failures_since(self, account: str, since: float, limit: int, pair: str | None = None) -> list[Doc]:
        """The newest ``limit`` failures of the account (of one client when ``pair`` is given) after ``since``
        (epoch s), oldest first."""
        query: Doc = {"account": account, "ts": {"$gt": since}}
        if pair is not None:
            query["pair"] = pair
        cursor = self.login_failures.find(query).sort("ts", -1).limit(limit)
        return list(reversed(await cursor.to_list(limit)))

    async def count_login_failures(self, account: str, since: float, pair: str | None = None) -> int:
        query: Doc = {"account": account, "ts": {"$gt": since}}
        if pair is not None:
            query["pair"] = pair
        return await self.login_failures.count_documents(query)

    async def delete_login_failure(self, failure_id: str) -> None:
        await self.login_failures.delete_one({"_id": failure_id})

    async def forget_login_failures(self, account: str, pair: str) -> None:
        await self.login_failures.delete_many({"account": account, "pair": pair})

    async def prune_login_failures(self, account: str, before: float) -> None:
        await self.login_failures.delete_many({"account": account, "ts": {"$lte": before}})

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

    async def remember_client(self, org_id: str, user_id: str, known: list[str]) -> None:
        await self.users.update_one({"_id": user_id, "org_id": org_id}, {"$set": {"known_clients": known}})
