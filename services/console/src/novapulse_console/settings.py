"""Console settings (environment variables; a bad value stops start-up with one line naming it)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from novapulse_runtime.secretbox import EncryptionKeys
from novapulse_runtime.settings import ServiceSettings

from .constants import SERVICES

_URL = r"^(https?://[^\s]+)?$"


class ConsoleSettings(ServiceSettings):
    uses_database: ClassVar[bool] = False

    service_name: str = "console"
    http_port: int = 8100
    mongo_url: str = Field(default="", pattern=r"^(mongodb(\+srv)?://.*)?$")
    """``MONGO_URL``: not used — the console owns no data."""

    console_session_keys: EncryptionKeys
    """``CONSOLE_SESSION_KEYS``: Fernet keys (comma-separated, newest first) that encrypt and authenticate the
    session cookie. Required; rotating keeps sessions made with any listed key."""
    console_session_max_age: int = Field(default=43_200, ge=300, le=7 * 86_400)
    """``CONSOLE_SESSION_MAX_AGE``: seconds a sign-in lasts at most, whatever the refresh tokens allow."""
    console_cookie_secure: bool = True
    """``CONSOLE_COOKIE_SECURE``: send the cookie only over HTTPS (named ``__Host-np_console``); ``make run``
    turns it off for plain-HTTP loopback."""
    console_operator_emails: str = Field(default="", max_length=4096)
    """``CONSOLE_OPERATOR_EMAILS``: comma-separated addresses of the platform's operators; only they see the
    event-bus pages, which the console calls with ``OPERATIONS_TOKEN`` (never a tenant's token). A listed
    user is an operator only while their account has MFA on: operators see every tenant's events, so they
    must sign in with two factors (one who turns MFA off loses the operator pages at once)."""
    console_api_timeout: float = Field(default=10.0, gt=0, le=120)
    """``CONSOLE_API_TIMEOUT``: seconds each call to a service's API may take."""

    auth_api_url: str = Field(default="http://127.0.0.1:8101", pattern=r"^https?://[^\s]+$")
    """``AUTH_API_URL``: the auth service's base URL (required: there is no console without it)."""
    webhook_api_url: str = Field(default="http://127.0.0.1:8102", pattern=_URL)
    """``WEBHOOK_API_URL``: the webhook service; empty hides its pages."""
    notification_api_url: str = Field(default="http://127.0.0.1:8103", pattern=_URL)
    """``NOTIFICATION_API_URL``: the notification service; empty hides its pages."""
    workflow_api_url: str = Field(default="http://127.0.0.1:8104", pattern=_URL)
    """``WORKFLOW_API_URL``: the workflow service; empty hides its pages."""
    report_api_url: str = Field(default="http://127.0.0.1:8105", pattern=_URL)
    """``REPORT_API_URL``: the report service; empty hides its pages."""

    def service_urls(self) -> dict[str, str]:
        """``{service: base URL}`` of the services the console is configured for (empty ones left out)."""
        urls = {name: getattr(self, f"{name}_api_url").rstrip("/") for name in SERVICES}
        return {name: url for name, url in urls.items() if url}

    def operator_emails(self) -> frozenset[str]:
        return frozenset(e.strip().lower() for e in self.console_operator_emails.split(",") if e.strip())
