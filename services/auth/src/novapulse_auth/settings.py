"""Configuration of the auth service (environment variables on top of the shared ones)."""

from __future__ import annotations

from pydantic import Field, model_validator

from novapulse_runtime.secretbox import EncryptionKeys
from novapulse_runtime.settings import ServiceSettings

from .constants import DEFAULT_HTTP_PORT, SERVICE_NAME


class AuthSettings(ServiceSettings):
    """``AUTH_ENCRYPTION_KEYS`` is required: comma-separated Fernet keys, the first encrypts, all decrypt
    (prepend a new key to rotate, re-encrypt, then drop the old one)."""

    service_name: str = SERVICE_NAME
    http_port: int = DEFAULT_HTTP_PORT
    auth_encryption_keys: EncryptionKeys
    access_token_ttl: int = Field(default=900, ge=60, le=3600)
    """Seconds an access token (JWT) is valid."""
    refresh_token_ttl: int = Field(default=14 * 86400, ge=300, le=90 * 86400)
    """Seconds a refresh token is valid (never past its session's ``session_max_age``)."""
    session_max_age: int = Field(default=30 * 86400, ge=600, le=365 * 86400)
    """Seconds a session (refresh-token family) lives, whatever its activity."""
    invite_ttl: int = Field(default=7 * 86400, ge=300, le=30 * 86400)
    """Seconds an invitation link is valid."""
    invite_accept_url: str = Field(default="http://127.0.0.1:8100/invite/accept", pattern=r"^https?://")
    key_rotation_interval: int = Field(default=30 * 86400, ge=60, le=365 * 86400)
    """Seconds between signing-key rotations (longer than ``access_token_ttl``)."""
    key_reload_interval: float = Field(default=30.0, gt=0, le=3600)
    """Seconds a process keeps its cached signing keys before reading them again."""
    mfa_issuer: str = Field(default="NovaPulse", min_length=1, max_length=64)
    password_hash_workers: int = Field(default=2, ge=1, le=64)
    """Threads hashing passwords (each holds ``argon2_memory_kib`` KiB while it hashes)."""
    argon2_memory_kib: int = Field(default=19 * 1024, ge=19 * 1024, le=1024 * 1024)
    """argon2id memory cost ``m`` in KiB (RFC 9106 §4; OWASP floor 19 MiB)."""
    argon2_time_cost: int = Field(default=2, ge=2, le=20)
    """argon2id time cost ``t`` (passes over memory; RFC 9106 §4)."""
    login_ip_limit: int = Field(default=10, ge=1)
    """Log-in requests per client per 60 seconds."""
    login_account_limit: int = Field(default=5, ge=1)
    """Wrong passwords per (account, client network) per ``login_failure_window`` seconds; also password changes per
    user per 300 seconds."""
    register_ip_limit: int = Field(default=10, ge=1)
    """Registrations (and verifications, invite acceptances) per client per 3600 seconds."""
    invite_org_limit: int = Field(default=50, ge=1)
    """Invitations per organisation per 3600 seconds."""
    mfa_verify_user_limit: int = Field(default=10, ge=1)
    """MFA code checks per user per 300 seconds."""
    mfa_verify_ip_limit: int = Field(default=30, ge=1)
    """``/mfa/verify`` requests per client per 60 seconds."""
    refresh_ip_limit: int = Field(default=120, ge=1)
    """Refresh requests per client per 60 seconds."""
    # log-in lockout (lockout.py)
    login_account_ceiling: int = Field(default=20, ge=1)
    """Wrong passwords per account from clients that never signed in to it, per ``login_failure_window`` seconds."""
    login_failure_window: int = Field(default=300, ge=10, le=86400)
    """Seconds over which wrong passwords are counted (and a block lasts at most)."""
    # registration (registration.py)
    registration_email_verification: bool = True
    registration_ttl: int = Field(default=86400, ge=300, le=7 * 86400)
    """Seconds a registration link is valid."""
    registration_verify_url: str = Field(default="http://127.0.0.1:8100/register/verify", pattern=r"^https?://")
    register_email_limit: int = Field(default=3, ge=1)
    """Registrations per recipient mailbox per 3600 seconds."""
    # invitations: per recipient address (normalised), across all organisations, per day
    invite_recipient_limit: int = Field(default=5, ge=1)
    """Invitations per recipient mailbox (all organisations) per 86400 seconds."""
    revocation_sync_interval: float = Field(default=2.0, gt=0, le=60)
    """Seconds between two rewrites of lost session revocations into Redis (worker)."""

    @model_validator(mode="after")
    def _rotation_outlives_tokens(self) -> AuthSettings:
        # Only current and previous keys are published: a token must expire before its key is retired.
        if self.key_rotation_interval <= self.access_token_ttl:
            raise ValueError("KEY_ROTATION_INTERVAL must be longer than ACCESS_TOKEN_TTL")
        return self
