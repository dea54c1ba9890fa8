"""Events produced by the report service (stream ``novapulse:events:report``)."""

from __future__ import annotations

from . import EventData, register


class ReportCompleted(EventData):
    """A requested report finished and can be downloaded."""

    report_id: str
    org_id: str
    requested_by: str
    name: str
    format: str
    download_path: str


register("report.completed", ReportCompleted, source="report", public=True)
