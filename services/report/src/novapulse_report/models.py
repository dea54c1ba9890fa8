"""HTTP request and response models of the report service (they drive parsing, 422s and OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from novapulse_runtime.clock import from_ms
from novapulse_runtime.paging import PageQuery

from .repository import Report

Format = Literal["csv", "ndjson", "xlsx", "pdf"]
Status = Literal["queued", "running", "succeeded", "failed", "expired", "cancelled"]
ReportTypeName = Literal["auth_activity", "webhook_outcomes", "notification_deliveries", "workflow_runs"]
"""The names of :data:`~novapulse_report.report_types.REPORT_TYPES` (a unit test keeps them equal)."""


class ReportIn(BaseModel):
    """A report to generate. ``start`` is included, ``end`` excluded; both carry an offset."""

    model_config = ConfigDict(extra="forbid")

    type: ReportTypeName = Field(description="The report type (`GET /types`)")
    format: Format
    start: AwareDatetime
    end: AwareDatetime
    time_zone: str = Field(
        default="UTC", min_length=1, max_length=64, description="IANA time zone of the times written"
    )
    filters: dict[str, str] = Field(default_factory=dict, max_length=8, description="column → value (equality)")
    csv_bom: bool = Field(default=False, description="Start a CSV with the UTF-8 byte-order mark (for Excel)")
    neutralize_formulas: bool = Field(
        default=True, description="Prefix cells starting with = + - @ tab or CR with ' (CSV formula injection)"
    )


class Progress(BaseModel):
    rows_done: int
    estimated_total: int
    percent: float
    eta_seconds: float | None
    bytes: int


class ReportOut(BaseModel):
    id: str
    type: str
    format: Format
    status: Status
    requested_by: str
    created_at: datetime
    finished_at: datetime | None
    parameters: dict[str, object]
    progress: Progress
    row_count: int | None = Field(description="Rows in the file, when it succeeded")
    sha256: str | None = Field(description="Hex SHA-256 of the file, when it succeeded")
    size: int | None = Field(description="Bytes of the file, when it succeeded")
    expires_at: datetime | None
    download_url: str | None = Field(description="A freshly signed download link, when it succeeded")
    error: str | None
    deduplicated: bool = False

    @classmethod
    def of(cls, r: Report, link: str | None, now_ms: int, *, deduplicated: bool = False) -> ReportOut:
        status = "expired" if r.status == "succeeded" and r.expires_ms <= now_ms else r.status
        done = status == "succeeded"
        estimate = r.row_count if done else max(r.estimated_total, r.rows_done)
        percent = 100.0 if done else (round(100.0 * r.rows_done / estimate, 1) if estimate else 0.0)
        eta = None
        if r.status == "running" and r.rows_per_s > 0:
            eta = round(max(0, estimate - r.rows_done) / r.rows_per_s, 1)
        return cls(
            id=r.id,
            type=r.type,
            format=r.format,  # type: ignore[arg-type]
            status=status,  # type: ignore[arg-type]
            requested_by=r.requested_by,
            created_at=from_ms(r.created_ms),
            finished_at=from_ms(r.finished_ms) if r.finished_ms else None,
            parameters={
                "start": from_ms(r.params["start_ms"]).isoformat(),
                "end": from_ms(r.params["end_ms"]).isoformat(),
                "time_zone": r.params["time_zone"],
                "filters": r.params["filters"],
                "csv_bom": r.params["csv_bom"],
                "neutralize_formulas": r.params["neutralize_formulas"],
            },
            progress=Progress(
                rows_done=r.row_count if done else r.rows_done,
                estimated_total=estimate,
                percent=percent,
                eta_seconds=eta,
                bytes=r.size if done else r.bytes_done,
            ),
            row_count=r.row_count if done else None,
            sha256=r.sha256 if done else None,
            size=r.size if done else None,
            expires_at=from_ms(r.expires_ms) if r.expires_ms else None,
            download_url=link if done else None,
            error=r.error or None,
            deduplicated=deduplicated,
        )


class ReportList(BaseModel):
    items: list[ReportOut]
    next_cursor: str | None = Field(description="Cursor of the next page; null on the last page")


class ReportQuery(PageQuery):
    """List filters: ``status`` and ``type``."""

    status: Status | None = None
    type: ReportTypeName | None = None


class DownloadQuery(BaseModel):
    """The signed link's parameters."""

    model_config = ConfigDict(extra="forbid")

    expires: str = Field(default="", max_length=20)
    sig: str = Field(default="", max_length=128)


class ReportTypeOut(BaseModel):
    name: str
    title: str
    columns: list[dict[str, str]]
    filters: list[str]
    default_sort: str
    roles: list[str]
    fed_by: list[str]


class ReportTypeList(BaseModel):
    items: list[ReportTypeOut]
