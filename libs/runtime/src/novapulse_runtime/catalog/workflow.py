"""Events of the workflow service (stream ``<namespace>:events:workflow``): commands the notification and
report services consume, the run lifecycle, and the application events a workflow's ``emit`` step sends."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from .registry import EventData, EventType


class NotificationRequested(EventData):
    """Private command: send a templated notification to one user or to every user of an org role."""

    org_id: str
    template: str
    user_id: str | None = None
    role: Literal["owner", "admin", "member"] | None = None
    data: dict[str, Any] = {}


class RunStarted(EventData):
    """A workflow run started (its first step is about to run)."""

    org_id: str
    run_id: str
    definition_id: str
    version: int
    trigger_event_id: str


class RunCompleted(EventData):
    """A workflow run reached its end."""

    org_id: str
    run_id: str
    definition_id: str
    version: int


class RunFailed(EventData):
    """A workflow run failed (a step failed past its retries with no ``catch``) or was cancelled."""

    org_id: str
    run_id: str
    definition_id: str
    version: int
    step: str
    error: str
    cancelled: bool = False


class Emitted(EventData):
    """An application event a workflow's ``emit`` step sent: ``type`` is the organisation's own type name,
    ``data`` its payload. The envelope type is always ``workflow.emitted`` (one catalogue entry); the webhook
    service delivers the event it carries under ``type``, with ``data`` as its payload, to the endpoints
    subscribed to that type, as it does for ``POST /api/v1/webhooks/events``."""

    org_id: str
    type: str
    data: dict[str, Any] = {}
    run_id: str
    step: str


class ReportRequested(EventData):
    """Private command to the report service: generate a report for ``requested_by`` with the semantics of
    ``POST /api/v1/reports`` (same parameters, limits and deduplication; ``request_id`` names the request
    for the workflow's own bookkeeping). Times are RFC 3339 with an offset; ``time_zone`` an IANA name."""

    org_id: str
    requested_by: str
    type: str
    format: Literal["csv", "ndjson", "xlsx", "pdf"]
    start: datetime
    end: datetime
    time_zone: str = "UTC"
    filters: dict[str, str] = {}
    csv_bom: bool = False
    neutralize_formulas: bool = True
    request_id: str = ""


SOURCE = "workflow"
EVENTS = (
    EventType("notification.requested", NotificationRequested, source=SOURCE, public=False),
    EventType("report.requested", ReportRequested, source=SOURCE, public=False),
    EventType("workflow.run.started", RunStarted, source=SOURCE, public=True),
    EventType("workflow.run.completed", RunCompleted, source=SOURCE, public=True),
    EventType("workflow.run.failed", RunFailed, source=SOURCE, public=True),
    EventType("workflow.emitted", Emitted, source=SOURCE, public=True),
)
"""The types this service produces (registered in :data:`~novapulse_runtime.catalog.CATALOG`)."""
