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
    refresh_token_ttl: int = Field(default=14 * 86400, ge=300, le=90 * 86400)
    session_max_age: int = Field(default=30 * 86400, ge=600, le=365 * 86400)
    invite_ttl: int = Field(default=7 * 86400, ge=300, le=30 * 86400)
    invite_accept_url: str = Field(default="http://127.0.0.1:8101/invite/accept", pattern=r"^https?://")
    key_rotation_interval: int = Field(default=30 * 86400, ge=60, le=365 * 86400)
    key_reload_interval: float = Field(default=30.0, gt=0, le=3600)
    mfa_issuer: str = Field(default="NovaPulse", min_length=1, max_length=64)
    password_hash_workers: int = Field(default=2, ge=1, le=64)
    argon2_memory_kib: int = Field(default=19 * 1024, ge=19 * 1024, le=1024 * 1024)
    argon2_time_cost: int = Field(default=2, ge=2, le=20)
    login_ip_limit: int = Field(default=10, ge=1)
    login_account_limit: int = Field(default=5, ge=1)
    register_ip_limit: int = Field(default=10, ge=1)
    invite_org_limit: int = Field(default=50, ge=1)
    mfa_verify_user_limit: int = Field(default=10, ge=1)
    mfa_verify_ip_limit: int = Field(default=30, ge=1)
    refresh_ip_limit: int = Field(default=120, ge=1)
    # log-in lockout (lockout.py): wrong passwords per (account, client network), and for the account from
    # every client that never signed in to it, per LOGIN_FAILURE_WINDOW seconds
    login_account_ceiling: int = Field(default=20, ge=1)
    login_failure_window: int = Field(default=300, ge=10, le=86400)
    # registration (registration.py)
    registration_email_verification: bool = True
    registration_ttl: int = Field(default=86400, ge=300, le=7 * 86400)
    registration_verify_url: str = Field(default="http://127.0.0.1:8101/register/verify", pattern=r"^https?://")
    register_email_limit: int = Field(default=3, ge=1)
    # invitations: per recipient address (normalised), across all organisations, per day
    invite_recipient_limit: int = Field(default=5, ge=1)
    revocation_sync_interval: float = Field(default=2.0, gt=0, le=60)

    @model_validator(mode="after")
    def _rotation_outlives_tokens(self) -> AuthSettings:
        # Only current and previous keys are published: a token must expire before its key is retired.
        if self.key_rotation_interval <= self.access_token_ttl:
            raise ValueError("KEY_ROTATION_INTERVAL must be longer than ACCESS_TOKEN_TTL")
        return self
