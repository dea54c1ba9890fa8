"""Events of the workflow service (stream ``<namespace>:events:workflow``): commands the notification and
report services consume."""

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


EVENTS = (
    EventType("notification.requested", NotificationRequested, source="workflow", public=False),
    EventType("report.requested", ReportRequested, source="workflow", public=False),
)
"""The types this service produces (registered in :data:`~novapulse_runtime.catalog.CATALOG`)."""
