"""Configuration of the example service (environment variables; a bad value stops start-up with a line
naming the variable)."""

from __future__ import annotations

from pydantic import Field

from novapulse_runtime.settings import ServiceSettings

from .constants import DEFAULT_HTTP_PORT, SERVICE_NAME


class ExampleSettings(ServiceSettings):
    """Everything in :class:`ServiceSettings` plus the service's own settings."""

    service_name: str = SERVICE_NAME
    http_port: int = DEFAULT_HTTP_PORT

    note_retention_days: int = Field(default=30, ge=1, le=3650)
    """Days a note is kept (``NOTE_RETENTION_DAYS``); older notes are deleted by the worker."""
    purge_interval_seconds: float = Field(default=60.0, gt=0, le=86_400)
    """Seconds between two retention passes of the worker (``PURGE_INTERVAL_SECONDS``)."""
