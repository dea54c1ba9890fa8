"""Events produced by the report service (stream ``<namespace>:events:report``)."""

from __future__ import annotations

from .registry import EventData, EventType


class ReportCompleted(EventData):
    """A requested report finished and can be downloaded."""

    report_id: str
    org_id: str
    requested_by: str
    name: str
    format: str
    download_path: str


EVENTS = (EventType("report.completed", ReportCompleted, source="report", public=True),)
"""The types this service produces (registered in :data:`~novapulse_runtime.catalog.CATALOG`)."""
