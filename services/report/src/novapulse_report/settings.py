"""Configuration of the report service (environment variables; a bad value stops start-up with a line
naming the variable)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from novapulse_runtime.settings import ServiceSettings

from .constants import DEFAULT_HTTP_PORT, SERVICE_NAME


class ReportSettings(ServiceSettings):
    """Everything in :class:`ServiceSettings` plus the report service's own settings."""

    service_name: str = SERVICE_NAME
    http_port: int = DEFAULT_HTTP_PORT

    report_download_secret: SecretStr = Field(min_length=32)
    """``REPORT_DOWNLOAD_SECRET``: HMAC-SHA256 key of download links (at least 32 characters; api and worker
    share it: the worker signs the link of ``report.completed``)."""
    link_ttl_seconds: int = Field(default=900, ge=10, le=86_400)
    """``LINK_TTL_SECONDS``: seconds a download link minted by ``GET /reports/{id}`` stays valid."""
    file_ttl_hours: float = Field(default=168.0, gt=0, le=24 * 365)
    """``FILE_TTL_HOURS``: hours a finished report's file is kept; then it is ``expired`` and deleted."""
    dedup_window_seconds: int = Field(default=600, ge=0, le=86_400)
    """``DEDUP_WINDOW_SECONDS``: an identical request within this many seconds of a succeeded report gets
    that report (a queued or running identical report is always shared)."""
    lease_seconds: float = Field(default=30.0, gt=0, le=3600)
    """``LEASE_SECONDS``: how long a worker holds a running report without a checkpoint before another
    worker may take it over."""
    poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    """``POLL_INTERVAL_SECONDS``: seconds an idle worker waits before looking for queued reports again."""
    batch_rows: int = Field(default=2000, ge=1, le=100_000)
    """``BATCH_ROWS``: rows read from MongoDB per query (keyset batches)."""
    chunk_rows: int = Field(default=20_000, ge=1, le=1_000_000)
    """``CHUNK_ROWS``: rows per stored part; a checkpoint is recorded after each part."""
    max_in_flight_per_org: int = Field(default=3, ge=1, le=1000)
    """``MAX_IN_FLIGHT_PER_ORG``: queued or running reports an organisation may have (429 past it)."""
    max_rows_per_report: int = Field(default=2_000_000, ge=1, le=100_000_000)
    """``MAX_ROWS_PER_REPORT``: rows one report may hold (422 past it, at request time)."""
    max_bytes_per_org: int = Field(default=2 * 1024**3, ge=1024, le=1024**4)
    """``MAX_BYTES_PER_ORG``: bytes of finished files an organisation may keep (409 past it)."""
    max_range_days: int = Field(default=366, ge=1, le=3660)
    """``MAX_RANGE_DAYS``: the longest time range of a report, in days (422 past it)."""
    retention_interval_seconds: float = Field(default=300.0, gt=0, le=86_400)
    """``RETENTION_INTERVAL_SECONDS``: seconds between two passes of the retention job."""
