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
    """A signed link path (``/api/v1/reports/<id>/download?expires=…&sig=…``) valid until the file expires."""
    row_count: int = 0
    sha256: str = ""
    """Hex SHA-256 of the file (the manifest's checksum): a download can be checked for truncation."""
    expires_at: str = ""
    """RFC 3339 time the file is deleted (empty from producers older than this field)."""
    request_id: str = ""
    """The ``request_id`` of the ``report.requested`` command that asked for it (empty for API requests)."""


class ReportFailed(EventData):
    """A requested report could not be generated (or exceeded a limit while running), or was refused.

    A refused ``report.requested`` command (no report made) has an empty ``report_id`` and a ``code``."""

    report_id: str
    org_id: str
    requested_by: str
    name: str
    format: str
    error: str
    request_id: str = ""
    """The ``request_id`` of the ``report.requested`` command that asked for it (empty for API requests)."""
    code: str = ""
    """Why a command was refused, for machines: ``invalid_parameters`` (unknown type, format or filter, bad
    time zone or range), ``too_many_rows``, ``too_many_in_flight``, ``storage_full``, ``role_not_allowed``;
    empty when the report failed while being generated (``error`` says why)."""


SOURCE = "report"
EVENTS = (
    EventType("report.completed", ReportCompleted, source=SOURCE, public=True),
    EventType("report.failed", ReportFailed, source=SOURCE, public=True),
)
"""The types this service produces (registered in :data:`~novapulse_runtime.catalog.CATALOG`)."""
