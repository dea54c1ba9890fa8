"""TOTP multi-factor authentication: set-up with a QR code, enabling with recovery codes, the log-in
challenge, disabling and regeneration.

Safer than the usual defaults:
- a code is accepted at most once (RFC 6238 §5.2): the user's document holds the last accepted time step
  (``totp_last_step``) and only a later step passes, by one conditional update in MongoDB (so two parallel
  requests with the same code cannot both pass, and losing Redis's data does not re-open a used code) — this
  covers the code that enabled MFA too;
- a challenge (``mfa_token``) is single-use, lives ``MFA_CHALLENGE_TTL`` s and dies after
  ``MFA_CHALLENGE_MAX_FAILURES`` wrong codes; wrong codes also count per user across all challenges and
  all code-checking routes (``MFA_USER_MAX_FAILURES`` per ``MFA_USER_FAILURE_WINDOW`` s), so parallel
  challenges do not multiply the guesses. That budget is security state, so it lives on the user's document
  in MongoDB (a Redis flush does not hand out fresh guesses), and each check takes its slot *before* the code
  is checked, atomically, giving it back when the code was right: parallel wrong codes cannot overshoot it;
- recovery codes are stored as salted hashes and consumed atomically.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import os
import time
from typing import Any

from redis.asyncio import Redis

from novapulse_runtime.catalog.auth import MfaChallengeFailed, MfaDisabled, MfaEnabled, MfaRecoveryCodeUsed
from novapulse_runtime.secretbox import SecretBox

from .constants import (
    MFA_CHALLENGE_KEY,
    MFA_CHALLENGE_MAX_FAILURES,
    MFA_CHALLENGE_TTL,
    MFA_PENDING_TTL,
    MFA_TOKEN_PREFIX,
    MFA_USER_FAILURE_WINDOW,
    MFA_USER_MAX_FAILURES,
    RECOVERY_CODE_COUNT,
    UserStatus,
)
from .errors import (
    InvalidChallenge,
    MfaAlreadyOn,
    MfaNotOn,
    NoPendingMfaSetup,
    OneCodeRequired,
    TooManyWrongCodes,
    UserNotFound,
    WrongChallengeCode,
    WrongCode,
    WrongPasswordOrCode,
)
from .lockout import LoginGuard
from .models import MfaSetupOut
from .opaque import new_token, token_hash
from .passwords import PasswordHashing
from .ports import Outbox
from .repository import Repository, recovery_code_doc
from .sessions import SessionService, TokenPair
from .totp import (
    hash_recovery_code,
    matching_step,
    new_recovery_codes,
    new_secret,
    provisioning_uri,
    qr_png_data_uri,
    qr_svg,
)

log = logging.getLogger(__name__)

# KEYS[1] = challenge; ARGV = max failures. Returns failures so far, or -1 when the challenge is gone.
_FAIL_CHALLENGE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if n >= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) end
return n
"""


class MfaService:
    """TOTP multi-factor authentication (RFC 6238: HMAC-SHA1, 6 digits, 30 s steps, one step of drift either
    side; secrets of 160 bits encrypted at rest) with single-use recovery codes. See the module's docstring
    for the replay and guessing defences.
    """

    def __init__(
        self,
        repo: Repository,
        box: SecretBox,
        redis: Redis,
        sessions: SessionService,
        passwords: PasswordHashing,
        outbox: Outbox,
        *,
        issuer: str,
        enc_key_id: str = "",
        guard: LoginGuard | None = None,
    ) -> None:
        """:param issuer: the ``issuer`` of the otpauth URI (the name authenticator apps show).
        :param enc_key_id: fingerprint of the key secrets are encrypted under (:func:`.reencrypt.key_id`).
        :param guard: the log-in lockout, told when a challenge completes (the client becomes known).
        """
        self._guard = guard  # a completed challenge makes the client known to the account (lockout ceiling)
        self._enc_key_id = enc_key_id
        self._repo = repo
        self._box = box
        self._redis = redis
        self._sessions = sessions
        self._passwords = passwords
        self._outbox = outbox
        self._issuer = issuer
        self._fail_challenge = redis.register_script(_FAIL_CHALLENGE)

    # --- code checks ---------------------------------------------------------------------------------------

    async def _claim(self, user: dict[str, Any], step: int) -> bool:
        """Accept ``step`` once: security state lives in MongoDB, not in Redis."""
        return await self._repo.claim_totp_step(user["org_id"], user["_id"], step)

    async def _reserve(self, user: dict[str, Any]) -> float:
        """Take one slot of the user's wrong-code budget (MongoDB) before a code or password is checked; the
        window's start, for :meth:`_release`. 429 with ``Retry-After`` (seconds to the window's end) when the
        budget is spent, whatever the code."""
        now_ts = time.time()
        attempt = await self._repo.reserve_mfa_attempt(
            user["org_id"], user["_id"], limit=MFA_USER_MAX_FAILURES, window=MFA_USER_FAILURE_WINDOW, now_ts=now_ts
        )
        if attempt is None:
            raise UserNotFound()
        if not attempt.reserved:
            retry_after = max(1, math.ceil(attempt.window_start + MFA_USER_FAILURE_WINDOW - now_ts))
            raise TooManyWrongCodes(retry_after=retry_after)
        return attempt.window_start

    async def _release(self, user: dict[str, Any], window_start: float) -> None:
        """The check passed: it was no wrong code, so its slot goes back."""
        await self._repo.release_mfa_attempt(user["org_id"], user["_id"], window_start)

    async def _check_totp(self, user: dict[str, Any], secret: str, code: str) -> bool:
        """Replay-proof TOTP check inside the user's wrong-code budget; a wrong code keeps its slot."""
        window_start = await self._reserve(user)
        step = matching_step(secret, code)
        if step is not None and await self._claim(user, step):
            await self._release(user, window_start)
            return True
        return False

    def _secret(self, user: dict[str, Any]) -> str:
        return self._box.decrypt(user["mfa_secret_enc"]).decode()

    async def _user(self, org_id: str, user_id: str) -> dict[str, Any]:
        user = await self._repo.user(org_id, user_id)
        if user is None or user.get("status") != UserStatus.ACTIVE.value:
            raise UserNotFound()
        return user

    # --- status, set-up, enable, disable, regenerate -----------------------------------------------------

    async def status(self, org_id: str, user_id: str) -> tuple[bool, int]:
        """Whether the user's MFA is on, and how many of their recovery codes are still unused (0 when off).

        :raises UserNotFound: (404) the user is gone or disabled.
        """
        user = await self._user(org_id, user_id)
        if not user.get("mfa_enabled"):
            return False, 0
        return True, len(await self._repo.unused_recovery_codes(org_id, user_id))

    async def setup(self, org_id: str, user_id: str) -> MfaSetupOut:
        """A new pending secret (replacing any earlier one), valid ``MFA_PENDING_TTL`` (600) seconds, with its
        otpauth URI and QR codes (PNG data URI and SVG).

        :raises UserNotFound: (404) the user is gone or disabled.
        :raises MfaAlreadyOn: (409) MFA is on; disable it first.
        """
        user = await self._user(org_id, user_id)
        if user.get("mfa_enabled"):
            raise MfaAlreadyOn("MFA is already on; disable it first")
        secret = new_secret()
        uri = provisioning_uri(secret, user["email"], self._issuer)
        await self._repo.set_pending_mfa(
            org_id, user_id, self._box.encrypt(secret.encode()), self._enc_key_id, time.time() + MFA_PENDING_TTL
        )
        loop = asyncio.get_running_loop()
        png, svg = await asyncio.gather(
            loop.run_in_executor(None, qr_png_data_uri, uri), loop.run_in_executor(None, qr_svg, uri)
        )
        return MfaSetupOut(otpauth_uri=uri, qr_png=png, qr_svg=svg, expires_in=MFA_PENDING_TTL)

    def _new_codes(self, org_id: str, user_id: str) -> tuple[list[str], list[dict[str, Any]]]:
        codes = new_recovery_codes(RECOVERY_CODE_COUNT)
        docs = []
        for code in codes:
            salt = os.urandom(16)
            docs.append(
                recovery_code_doc(org_id=org_id, user_id=user_id, salt=salt, code_hash=hash_recovery_code(code, salt))
            )
        return codes, docs

    async def enable(self, org_id: str, user_id: str, code: str) -> list[str]:
        """Confirm the pending secret with a current code (RFC 6238; a code is accepted once, §5.2): MFA turns on,
        ``mfa.enabled`` is recorded, and ``RECOVERY_CODE_COUNT`` (10) recovery codes are returned, shown once.

        :raises UserNotFound: (404) the user is gone or disabled.
        :raises MfaAlreadyOn: (409) MFA is on already (also when a parallel enable won).
        :raises NoPendingMfaSetup: (409) no pending set-up, or it expired.
        :raises TooManyWrongCodes: (429) the user's wrong-code budget is spent; ``retry_after`` in seconds.
        :raises WrongCode: (400) the code is wrong or was already used.
        """
        user = await self._user(org_id, user_id)
        if user.get("mfa_enabled"):
            raise MfaAlreadyOn()
        pending, expires = user.get("mfa_pending_enc"), user.get("mfa_pending_expires_ts")
        if not pending or not isinstance(expires, int | float) or expires <= time.time():
            raise NoPendingMfaSetup()
        secret = self._box.decrypt(pending).decode()
        if not await self._check_totp(user, secret, code):
            raise WrongCode()
        codes, docs = self._new_codes(org_id, user_id)
        async with self._outbox.transaction() as session:
            secret_enc = self._box.encrypt(secret.encode())
            if not await self._repo.enable_mfa(org_id, user_id, secret_enc, self._enc_key_id, session):
                raise MfaAlreadyOn()
            await self._repo.replace_recovery_codes(org_id, user_id, docs, session)
            await self._outbox.add(
                "mfa.enabled",
                MfaEnabled(user_id=user_id, org_id=org_id),
                org_id=org_id,
                subject=user_id,
                session=session,
            )
        return codes

    async def disable(self, org_id: str, user_id: str, password: str, code: str) -> None:
        """Turn MFA off with the password and a current code; ``mfa.disabled`` is recorded. The password is checked
        first, inside the wrong-code budget, so a wrong password burns no time step.

        :raises UserNotFound: (404) the user is gone or disabled.
        :raises MfaNotOn: (409) MFA is off.
        :raises TooManyWrongCodes: (429) the wrong-code budget is spent; ``retry_after`` in seconds.
        :raises WrongPasswordOrCode: (400) either is wrong (not said which).
        """
        user = await self._user(org_id, user_id)
        if not user.get("mfa_enabled"):
            raise MfaNotOn()
        window_start = await self._reserve(user)
        if not await self._passwords.verify(user.get("password_hash"), password):
            raise WrongPasswordOrCode()  # the slot stays spent
        await self._release(user, window_start)
        if not await self._check_totp(user, self._secret(user), code):  # checked after the password: no step burnt
            raise WrongPasswordOrCode()
        await self._turn_off(org_id, user_id, by=user_id)

    async def _turn_off(self, org_id: str, user_id: str, *, by: str) -> bool:
        async with self._outbox.transaction() as session:
            if not await self._repo.disable_mfa(org_id, user_id, session):
                return False
            await self._outbox.add(
                "mfa.disabled",
                MfaDisabled(user_id=user_id, org_id=org_id, by=by),
                org_id=org_id,
                subject=user_id,
                session=session,
            )
        return True

    async def admin_reset(self, org_id: str, user_id: str, *, by: str) -> bool:
        """A manager turns a member's MFA off (the member sets it up again); their sessions are revoked everywhere.
        ``by``: the acting user's id, recorded in ``mfa.disabled``.

        :returns: whether MFA was on (``False``: nothing changed but the sessions).
        """
        changed = await self._turn_off(org_id, user_id, by=by)
        await self._sessions.revoke_user(org_id, user_id, "mfa-reset")
        return changed

    async def regenerate(self, org_id: str, user_id: str, code: str) -> list[str]:
        """Replace the recovery codes after checking a current code (the old ones stop working).

        :returns: the new codes (10), shown once.
        :raises UserNotFound: (404) the user is gone or disabled.
        :raises MfaNotOn: (409) MFA is off.
        :raises TooManyWrongCodes: (429) the wrong-code budget is spent; ``retry_after`` in seconds.
        :raises WrongCode: (400) the code is wrong or was already used.
        """
        user = await self._user(org_id, user_id)
        if not user.get("mfa_enabled"):
            raise MfaNotOn()
        if not await self._check_totp(user, self._secret(user), code):
            raise WrongCode()
        codes, docs = self._new_codes(org_id, user_id)
        await self._repo.replace_recovery_codes(org_id, user_id, docs)
        return codes

    # --- the log-in challenge ----------------------------------------------------------------------------

    async def start_challenge(self, user: dict[str, Any], ip: str) -> tuple[str, int]:
        """Start the log-in challenge of a user whose password was right: a single-use ``mfa_token`` kept (as its
        SHA-256) in Redis for ``MFA_CHALLENGE_TTL`` seconds.

        :returns: the token and its lifetime in seconds.
        """
        token = new_token(MFA_TOKEN_PREFIX)
        key = MFA_CHALLENGE_KEY + token_hash(token)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"user_id": user["_id"], "org_id": user["org_id"], "failures": 0, "ip": ip})
            pipe.expire(key, MFA_CHALLENGE_TTL)
            await pipe.execute()
        return token, MFA_CHALLENGE_TTL

    async def challenge_user(self, mfa_token: str) -> str | None:
        """The user a challenge belongs to (for the per-user rate limit), without consuming it; ``None`` when the
        token is unknown.
        """
        user_id = await self._redis.hget(MFA_CHALLENGE_KEY + token_hash(mfa_token), "user_id")
        return str(user_id) if user_id else None

    async def _use_recovery_code(self, user: dict[str, Any], code: str) -> int | None:
        """Consume a recovery code; the number left, or ``None`` when it is wrong or spent."""
        window_start = await self._reserve(user)
        match = None
        for doc in await self._repo.unused_recovery_codes(user["org_id"], user["_id"]):
            if hmac.compare_digest(hash_recovery_code(code, bytes.fromhex(doc["salt"])), doc["hash"]):
                match = doc
        if match is not None and await self._repo.use_recovery_code(match["_id"]):
            await self._release(user, window_start)
            return len(await self._repo.unused_recovery_codes(user["org_id"], user["_id"]))
        return None

    async def verify(
        self, mfa_token: str, code: str | None, recovery_code: str | None, ip: str, client: str | None = None
    ) -> TokenPair:
        """Answer a log-in challenge with a TOTP code (RFC 6238, once per step) or a recovery code (single use). On
        success the challenge is spent, tokens are issued (``amr`` ``pwd otp mfa`` or ``pwd mfa``, RFC 8176) and
        ``client`` (the caller's network, the log-in lockout's key) becomes known to the account. A wrong code is
        recorded as ``mfa.challenge_failed``; ``MFA_CHALLENGE_MAX_FAILURES`` of them end the challenge.

        :raises OneCodeRequired: (422) not exactly one of ``code`` and ``recovery_code``.
        :raises InvalidChallenge: (401) unknown, expired or spent token, or the user can no longer sign in.
        :raises TooManyWrongCodes: (429) the user's wrong-code budget is spent; ``retry_after`` in seconds.
        :raises WrongChallengeCode: (401) the code is wrong (the challenge lives on).
        :raises AccountChangedDuringLogin: (401) the user changed while the session was created.
        """
        if (code is None) == (recovery_code is None):
            raise OneCodeRequired()
        key = MFA_CHALLENGE_KEY + token_hash(mfa_token)
        data = await self._redis.hgetall(key)
        if not data or "user_id" not in data:
            raise InvalidChallenge()
        user = await self._repo.user(str(data["org_id"]), str(data["user_id"]))
        if user is None or user.get("status") != UserStatus.ACTIVE.value or not user.get("mfa_enabled"):
            await self._redis.delete(key)
            raise InvalidChallenge()
        remaining: int | None = None
        if code is not None:
            ok = await self._check_totp(user, self._secret(user), code)
            amr = ["pwd", "otp", "mfa"]
        else:
            assert recovery_code is not None
            remaining = await self._use_recovery_code(user, recovery_code)
            ok = remaining is not None
            amr = ["pwd", "mfa"]
        if not ok:
            failures = int(await self._fail_challenge(keys=[key], args=[MFA_CHALLENGE_MAX_FAILURES]))
            await self._outbox.add(
                "mfa.challenge_failed",
                MfaChallengeFailed(user_id=user["_id"], org_id=user["org_id"], ip=ip, attempts=max(failures, 0)),
                org_id=user["org_id"],
                subject=user["_id"],
            )
            raise WrongChallengeCode() if failures >= 0 else InvalidChallenge()
        if await self._redis.delete(key) != 1:  # a parallel request consumed the challenge first
            raise InvalidChallenge()
        if remaining is not None:
            await self._outbox.add(
                "mfa.recovery_code_used",
                MfaRecoveryCodeUsed(user_id=user["_id"], org_id=user["org_id"], remaining=remaining),
                org_id=user["org_id"],
                subject=user["_id"],
            )
        pair = await self._sessions.start(user, amr)
        if self._guard is not None and client is not None:
            await self._guard.remember(user, client)
        return pair
