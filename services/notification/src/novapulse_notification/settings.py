"""Configuration of the notification service (environment variables)."""

from __future__ import annotations

from email.utils import parseaddr
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from novapulse_runtime.settings import ServiceSettings

from .constants import DEFAULT_HTTP_PORT, LEASE_MARGIN_SECONDS, SERVICE_NAME

SmtpTls = Literal["none", "starttls", "tls"]


class NotificationSettings(ServiceSettings):
    """Everything in :class:`ServiceSettings` plus SMTP, links, templates and delivery tuning."""

    service_name: str = SERVICE_NAME
    http_port: int = DEFAULT_HTTP_PORT

    smtp_host: str = Field(default="", max_length=255)
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_tls: SmtpTls = "none"
    smtp_username: str = Field(default="", max_length=255)
    smtp_password: SecretStr = SecretStr("")
    smtp_from: str = Field(default="NovaPulse <no-reply@novapulse.local>", min_length=3, max_length=255)
    smtp_timeout: float = Field(default=10.0, gt=0, le=120)
    """Seconds one SMTP conversation (connect to end of DATA) may take before it counts as transient."""
    smtp_fallback_host: str = Field(default="", max_length=255)
    smtp_fallback_port: int = Field(default=25, ge=1, le=65535)
    smtp_fallback_tls: SmtpTls = "none"
    smtp_retry_attempts: int = Field(default=3, ge=1, le=10)
    """Attempts on one relay for a transient error before moving on (to the fallback, then a later retry)."""
    smtp_retry_base_delay: float = Field(default=0.5, ge=0, le=60)
    """Seconds before the second attempt on a relay; doubled for each further one (with jitter)."""
    smtp_breaker_threshold: int = Field(default=5, ge=1, le=1000)
    """Consecutive transient failures of the primary after which new mail goes straight to the fallback."""
    smtp_breaker_cooldown: float = Field(default=30.0, gt=0, le=3600)
    """Seconds new mail goes to the fallback first once the breaker has tripped."""

    public_base_url: str = Field(default="http://127.0.0.1:8100", pattern=r"^https?://[^\s]+$")
    invite_accept_path: str = Field(default="/invite/accept", pattern=r"^/[^\s?#]*$")
    verify_email_path: str = Field(default="/register/verify", pattern=r"^/[^\s?#]*$")
    """Path of the e-mail verification link (the front end's page, which posts the token to auth)."""
    templates_dir: str = Field(default="", max_length=4096)
    """A directory whose files override the packaged templates of the same name."""

    mail_catcher_dir: str = Field(default=".data/mail", max_length=4096)
    """Where the local mail catcher (started when ``SMTP_HOST`` is empty) stores ``.eml`` files."""
    mail_catcher_port: int = Field(default=1025, ge=0, le=65535)
    """Port of the local mail catcher; 0 or a port in use: any free port."""

    delivery_lease_seconds: float = Field(default=0.0, ge=0, le=3600)
    """Seconds a worker owns a delivery without renewing it (renewed every third of it while the worker
    lives); another worker takes a dead holder's delivery over afterwards. 0 (default): ``SMTP_TIMEOUT`` +
    ``LEASE_MARGIN_SECONDS`` (15 s with the defaults)."""
    recipient_email_limit: int = Field(default=30, ge=1, le=100_000)
    """Ordinary mail (welcome, role, webhook, report, workflow) per recipient per ``RECIPIENT_EMAIL_WINDOW``."""
    recipient_email_window: float = Field(default=3600.0, gt=0, le=86_400)
    """Seconds: the window of every per-recipient and per-organisation e-mail budget."""
    invitation_recipient_limit: int = Field(default=10, ge=1, le=100_000)
    """Invitation mails per invited address per window (their own budget)."""
    invitation_org_limit: int = Field(default=200, ge=1, le=1_000_000)
    """Invitation mails per inviting organisation per window."""
    security_email_limit: int = Field(default=10, ge=1, le=100_000)
    """Security notices of one kind (e.g. ``challenge_failed``) per recipient per window; each kind has its
    own budget, so a flood of one kind cannot silence another."""
    verification_email_limit: int = Field(default=10, ge=1, le=100_000)
    """Registration verification mails per address per window (their own budget)."""

    event_handler_timeout: float = Field(default=120.0, gt=0, le=3600)
    """Seconds one event may take (all its mails, SMTP retries included) before the bus retries it."""
    event_max_deliveries: int = Field(default=8, ge=1, le=100)
    """How many times the bus hands one event to the handler (the first delivery included) before it
    dead-letters it; an :class:`~.planning.InvalidEvent` is dead-lettered at once."""

    @field_validator("smtp_from")
    @classmethod
    def _one_sender(cls, value: str) -> str:
        """``SMTP_FROM`` is one address, optionally with a display name (RFC 5322 §3.4): checked at start-up
        so that no mail fails later for a sender the relay cannot take."""
        _name, address = parseaddr(value)
        if "\r" in value or "\n" in value or "@" not in address or any(c.isspace() for c in address):
            raise ValueError("must be one e-mail address, e.g. 'NovaPulse <no-reply@example.com>'")
        return value

    def links_base(self) -> str:
        return self.public_base_url.rstrip("/")

    def lease_seconds(self) -> float:
        """The delivery lease: ``DELIVERY_LEASE_SECONDS``, or ``SMTP_TIMEOUT`` + the margin when 0."""
        return self.delivery_lease_seconds or self.smtp_timeout + LEASE_MARGIN_SECONDS
