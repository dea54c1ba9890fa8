"""Configuration of the webhook service (environment variables, prefix ``WEBHOOK_``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from novapulse_runtime.settings import Networks, ServiceSettings

from .constants import (
    DEFAULT_DISABLE_AFTER,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_RETRY_SCHEDULE,
    DEFAULT_ROTATION_GRACE,
    DEFAULT_TIMEOUT,
    SERVICE_NAME,
)


class WebhookSettings(ServiceSettings):
    """Settings of the webhook processes; see the README for the table."""

    service_name: str = SERVICE_NAME
    http_port: int = DEFAULT_HTTP_PORT

    webhook_secret_keys: str = Field(default="", repr=False)
    """Comma-separated Fernet keys; the first encrypts, all decrypt (rotation). Required."""
    webhook_allow_http: bool = False
    webhook_allowed_cidrs: Networks = ()
    webhook_timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, le=300)
    webhook_retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    webhook_retry_jitter: float = Field(default=0.2, ge=0, le=0.5)
    webhook_retry_after_max: float = Field(default=3600.0, ge=1, le=86400)
    webhook_disable_after: float = Field(default=DEFAULT_DISABLE_AFTER, gt=0)
    webhook_rotation_grace: float = Field(default=DEFAULT_ROTATION_GRACE, ge=0, le=30 * 86400)
    webhook_max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD, ge=1024, le=16 * 1_048_576)
    webhook_lease: float = Field(default=10.0, ge=1, le=300)
    """Seconds a claim on a message lasts; renewed every quarter of it while its worker lives."""
    webhook_poll_interval: float = Field(default=0.2, gt=0, le=60)
    webhook_default_concurrency: int = Field(default=4, ge=1, le=64)
    webhook_max_in_flight: int = Field(default=512, ge=1, le=100_000)
    webhook_max_endpoints_per_org: int = Field(default=100, ge=1, le=100_000)
    webhook_dns_timeout: float = Field(default=5.0, gt=0, le=60)

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = tuple(float(p) for p in value.split(",") if p.strip())
            if not parts or any(p < 0 for p in parts) or len(parts) > 50:
                raise ValueError("give 1 to 50 non-negative delays in seconds, comma-separated")
            return parts
        return value

    @property
    def lease_seconds(self) -> float:
        """How long a claim on a message lasts without renewal. The holder renews it every quarter of it, so
        a live worker keeps it however long an attempt takes, and a killed worker's messages are claimed
        again within ``webhook_lease + webhook_poll_interval`` seconds."""
        return self.webhook_lease
