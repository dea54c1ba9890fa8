"""Views of the report service: parse (declared models) → call the service layer → map to models.

Domain errors raised below are answered by this module's one table, :data:`PROBLEMS`.
"""

from __future__ import annotations

import re

from aiohttp import web

from novapulse_runtime.clock import now_ms
from novapulse_runtime.errors import ErrorTable, Problem
from novapulse_runtime.paging import page
from novapulse_runtime.problems import ProblemError
from novapulse_runtime.ratelimit import RateLimit, by_user
from novapulse_runtime.routes import Routes, json_response, path_id
from novapulse_runtime.tokens import principal

from .constants import API_PREFIX, REPORT_ID, RETRY_AFTER_SECONDS
from .errors import (
    InvalidParameters,
    LinkExpired,
    LinkInvalid,
    NotReady,
    RangeNotSatisfiable,
    ReportNotFound,
    RoleNotAllowed,
    StorageFull,
    TooManyInFlight,
    TooManyRows,
)
from .models import DownloadQuery, ReportIn, ReportList, ReportOut, ReportQuery, ReportTypeList, ReportTypeOut
from .report_types import FORMATS, REPORT_TYPES
from .reports import ReportRequest, ReportService

PROBLEMS: ErrorTable = {
    ReportNotFound: Problem(404),
    InvalidParameters: Problem(422, title="Invalid report parameters"),
    TooManyRows: Problem(422, title="Report too large"),
    RoleNotAllowed: Problem(403),
    TooManyInFlight: Problem(429, title="Too many reports in flight"),
    StorageFull: Problem(409, title="Report storage full"),
    NotReady: Problem(409, title="Report not ready"),
    LinkInvalid: Problem(403, title="Invalid download link"),
    LinkExpired: Problem(410, title="Download expired"),
}
"""How each domain error of this service is answered (RFC 9457 problems)."""

ASK_LIMIT = RateLimit("report-ask-user", 30, 60, key=by_user)
"""30 report requests a minute per user."""

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str | None) -> tuple[int | None, int | None]:
    """One ``bytes=first-last`` / ``first-`` / ``-suffix`` range (RFC 9110 §14.1.2) as ``(first, last)``;
    anything else (absent, several ranges, another unit) is ``(None, None)``: the whole file, which §14.2
    allows a server to answer."""
    match = _RANGE.fullmatch((header or "").strip())
    if match is None or (not match[1] and not match[2]):
        return None, None
    first = int(match[1]) if match[1] else None
    last = int(match[2]) if match[2] else None
    if first is not None and last is not None and last < first:
        return None, None
    return first, last


def build_routes(reports: ReportService, link_ttl_seconds: int) -> Routes:
    """The service's routes under ``/api/v1/reports``."""
    routes = Routes(prefix=API_PREFIX, tags=["reports"], problems=PROBLEMS)

    def out(report: object, *, deduplicated: bool = False) -> ReportOut:
        from .repository import Report

        assert isinstance(report, Report)
        return ReportOut.of(report, reports.link(report, link_ttl_seconds), now_ms(), deduplicated=deduplicated)

    @routes.post("/", body=ReportIn, response=ReportOut, status=202, auth=True, rate_limits=[ASK_LIMIT])
    async def ask(request: web.Request, body: ReportIn) -> web.StreamResponse:
        """Ask for a report: 202 with its status URL (``Location``); an identical pending or fresh report is
        returned instead of starting another."""
        who = principal(request)
        asked = await reports.request(
            who.org_id,
            who.user_id,
            who.role,
            ReportRequest(
                type=body.type,
                format=body.format,
                start=body.start,
                end=body.end,
                time_zone=body.time_zone,
                filters=body.filters,
                csv_bom=body.csv_bom,
                neutralize_formulas=body.neutralize_formulas,
            ),
        )
        headers = {"Location": f"{API_PREFIX}/{asked.report.id}", "Retry-After": str(RETRY_AFTER_SECONDS)}
        return json_response(out(asked.report, deduplicated=asked.deduplicated), 202, headers)

    @routes.get("/types", response=ReportTypeList, auth=True)
    async def list_types(request: web.Request) -> ReportTypeList:
        """The report types: columns, filters, default sort, roles, the events that feed them."""
        return ReportTypeList(
            items=[
                ReportTypeOut(
                    name=t.name,
                    title=t.title,
                    columns=[{"name": c.name, "type": c.kind} for c in t.columns],
                    filters=list(t.filters),
                    default_sort=t.default_sort,
                    roles=list(t.roles),
                    fed_by=list(t.fed_by),
                )
                for t in REPORT_TYPES.values()
            ]
        )

    @routes.get("/", query=ReportQuery, response=ReportList, auth=True)
    async def list_reports(request: web.Request, query: ReportQuery) -> ReportList:
        """The organisation's reports (those of types the caller's role may ask for), one page at a time."""
        who = principal(request)
        found = await reports.list(
            who.org_id, who.role, query.after, query.fetch, status=query.status, type_=query.type
        )
        items, cursor = page(found, query.limit, key=lambda r: r.id)
        return ReportList(items=[out(r) for r in items], next_cursor=cursor)

    @routes.get("/{report_id}", response=ReportOut, auth=True)
    async def get_report(request: web.Request) -> ReportOut:
        """A report's status and progress; when it succeeded, its checksum and a freshly signed link."""
        who = principal(request)
        return out(await reports.get(who.org_id, path_id(request, "report_id", REPORT_ID), role=who.role))

    @routes.delete("/{report_id}", auth=True)
    async def delete_report(request: web.Request) -> None:
        """Cancel a queued or running report, or delete a finished one and its file."""
        who = principal(request)
        await reports.cancel_or_delete(who.org_id, path_id(request, "report_id", REPORT_ID), role=who.role)

    @routes.get("/{report_id}/download", query=DownloadQuery, errors=(206, 403, 409, 410, 416))
    async def download(request: web.Request, query: DownloadQuery) -> web.StreamResponse:
        """The file, through a signed link (no token needed: the signature is the permission). Serves one
        byte range (206) when asked."""
        report_id = path_id(request, "report_id", REPORT_ID)
        wanted = parse_range(request.headers.get("Range"))
        try:
            found = await reports.download(report_id, query.expires, query.sig, wanted)
        except RangeNotSatisfiable as exc:
            size = exc.extra.get("size", 0)
            raise ProblemError(416, exc.detail, headers={"Content-Range": f"bytes */{size}"}) from exc
        report = found.report
        content_type, ext = FORMATS[report.format]
        partial = wanted != (None, None)
        response = web.StreamResponse(status=206 if partial else 200)
        response.headers["Content-Type"] = content_type
        response.headers["Content-Disposition"] = f'attachment; filename="{report.type}-{report.id}.{ext}"'
        response.headers["Accept-Ranges"] = "bytes"
        response.headers["ETag"] = f'"{report.sha256}"'
        response.headers["Cache-Control"] = "private, no-store"
        response.headers["X-Content-SHA256"] = report.sha256
        response.headers["X-Row-Count"] = str(report.row_count)
        if partial:
            response.headers["Content-Range"] = f"bytes {found.start}-{found.end - 1}/{found.size}"
        response.content_length = found.end - found.start
        await response.prepare(request)
        async for piece in found.pieces:
            await response.write(piece)
        await response.write_eof()
        return response

    return routes
