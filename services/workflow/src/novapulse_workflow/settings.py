"""Configuration of the workflow service (environment variables; a bad value stops start-up with a line
naming the variable)."""

from __future__ import annotations

from pydantic import Field

from novapulse_runtime.settings import ServiceSettings

from .constants import DEFAULT_HTTP_PORT, SERVICE_NAME


class WorkflowSettings(ServiceSettings):
    """Everything in :class:`ServiceSettings` plus the workflow service's own settings."""

    service_name: str = SERVICE_NAME
    http_port: int = DEFAULT_HTTP_PORT

    run_lease_seconds: float = Field(default=10.0, gt=0.05, le=600)
    """Seconds a worker holds a claimed run (``RUN_LEASE_SECONDS``); a dead worker's runs are taken over
    this long after its last renewal."""
    poll_interval_seconds: float = Field(default=0.1, gt=0, le=60)
    """Seconds between two looks for due runs when none was found (``POLL_INTERVAL_SECONDS``)."""
    run_slots: int = Field(default=16, ge=1, le=1000)
    """Runs one worker process executes at once (``RUN_SLOTS``)."""
    run_slots_per_org: int = Field(default=4, ge=1, le=1000)
    """Of those, the most one organisation may hold (``RUN_SLOTS_PER_ORG``): fairness between tenants within
    one worker."""
    org_runs_in_flight: int = Field(default=64, ge=1, le=10_000)
    """Runs of one organisation in flight at once across every worker (``ORG_RUNS_IN_FLIGHT``): the global
    cap, enforced through slot documents in the database."""
    run_retention_days: int = Field(default=30, ge=1, le=3650)
    """Days a finished run (with its journal) is kept (``RUN_RETENTION_DAYS``); older ones are deleted."""
    housekeeping_interval_seconds: float = Field(default=30.0, gt=0, le=86_400)
    """Seconds between two housekeeping passes: gauges and retention (``HOUSEKEEPING_INTERVAL_SECONDS``)."""
