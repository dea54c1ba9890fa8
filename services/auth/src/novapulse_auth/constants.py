"""Names, limits and defaults of the auth service in one place."""

from __future__ import annotations

import enum

SERVICE_NAME = "auth"
API_PREFIX = "/api/v1/auth"
DEFAULT_HTTP_PORT = 8101


class UserStatus(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class InviteStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"


class RegistrationStatus(enum.StrEnum):
    """Life of a registration: ``pending`` (verifiable), ``attempted`` (a registered address: never
    verifiable), ``verified`` (spent), ``void`` (too many wrong passwords)."""

    PENDING = "pending"
    ATTEMPTED = "attempted"
    VERIFIED = "verified"
    VOID = "void"


class KeyStatus(enum.StrEnum):
    """Life of a signing key: signs and is published (current), is published only (previous), neither."""

    CURRENT = "current"
    PREVIOUS = "previous"
    RETIRED = "retired"


# Collections of this service's own database.
USERS = "users"
ORGS = "organizations"
INVITES = "invites"
SESSIONS = "sessions"
REFRESH_TOKENS = "refresh_tokens"
SIGNING_KEYS = "signing_keys"
RECOVERY_CODES = "recovery_codes"
REGISTRATIONS = "registrations"  # pending e-mail verifications (token hash) and attempts on known addresses
LOGIN_FAILURES = "login_failures"  # one document per wrong password (lockout.py)
LOGIN_BLOCKS = "login_blocks"  # the block in force per (account, client) or account: one event per block
# users field: epoch seconds of the newest attempt of the account counted as a login_failures document (lockout.py)
LOGIN_FAILED_TS = "login_failed_ts"

# Redis keys (short-lived state).
REDIS_PREFIX = "novapulse:auth:"
MFA_CHALLENGE_KEY = REDIS_PREFIX + "mfa:challenge:"  # + sha256(mfa_token)

# Session revocation (pushed to every verifier, see novapulse_runtime.revocation).
REVOCATION_MARGIN = 60
"""Seconds a revocation outlives the last access token it can concern (verifier leeway and clock skew)."""

# Token shapes.
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type
REFRESH_TOKEN_PREFIX = "rt_"  # noqa: S105 - a prefix, not a secret
MFA_TOKEN_PREFIX = "mfa_"  # noqa: S105
INVITE_TOKEN_PREFIX = "inv_"  # noqa: S105
REGISTRATION_TOKEN_PREFIX = "reg_"  # noqa: S105
REGISTRATION_MAX_FAILURES = 5  # wrong passwords at /register/verify before the registration is void
TOKEN_BYTES = 32
SIGNING_ALGORITHM = "EdDSA"

# Passwords (OWASP: argon2id, m=19 MiB, t=2, p=1 at least).
PASSWORD_MIN = 8
PASSWORD_MAX = 128
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1
HASH_THREAD_NICENESS = 10  # hashing threads yield the CPU to the event loop

# MFA.
TOTP_DIGITS = 6
TOTP_PERIOD = 30
TOTP_WINDOW = 1  # steps either side of now
TOTP_SECRET_BYTES = 20
MFA_PENDING_TTL = 600
MFA_CHALLENGE_TTL = 300
MFA_CHALLENGE_MAX_FAILURES = 5
MFA_USER_MAX_FAILURES = 10  # wrong codes across all challenges and code routes of one user ...
MFA_USER_FAILURE_WINDOW = 900  # ... in this many seconds from the first (kept on the user's document in MongoDB)
RECOVERY_CODE_COUNT = 10
RECOVERY_CODE_LENGTH = 10  # base32 characters (50 bits), shown as xxxxx-xxxxx

# Log-in lockout and invitation budget.
KNOWN_CLIENTS_MAX = 10  # client networks remembered per user (newest first)
LOGIN_INFLIGHT_STALE = 60  # seconds a log-in attempt's in-flight mark in Redis counts at most (lockout.py)
INVITE_RECIPIENT_WINDOW = 86400  # seconds of the per-recipient invitation budget

# Sizes.
NAME_MAX = 100
EMAIL_MAX = 254
ORG_NAME_MAX = 100
LIST_LIMIT_MAX = 200
