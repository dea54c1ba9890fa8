"""Report pages: request a report (type from ``GET /types``, time range, time zone, format), the list, a
report's progress (htmx polls it while it is queued or running), download through the console, cancel or
delete.

The report service's download route is a signed link (no token: the signature is the permission). The
console never hands that link to the browser: ``/reports/{id}/download`` reads the report with the user's
token (so another organisation's report is a 404), takes the freshly signed link from the answer and
streams the file from the report service.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import available_timezones

import aiohttp
from aiohttp import web

from ..client import ApiProblem, problem_of
from ..web import Console, Section, console_of, form, redirect, signed_in
from .pagekit import form_time, ident, query_of, shown_time

SERVICE = "report"
FORMATS = ("csv", "ndjson", "xlsx", "pdf")
STATUSES = ("queued", "running", "succeeded", "failed", "expired", "cancelled")
ACTIVE = ("queued", "running")
PASSED_HEADERS = ("Content-Type", "Content-Disposition", "Content-Length", "ETag", "X-Content-SHA256", "X-Row-Count")
_ZONES = sorted(available_timezones())
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
"""A file may take longer than ``CONSOLE_API_TIMEOUT`` to stream; only a stall of 60 s ends it."""


async def _types(request: web.Request) -> list[dict[str, Any]]:
    """The report types the user's role may ask for (``GET /types``)."""
    answer = await console_of(request).client.call(request, SERVICE, "GET", "/types")
    role = request["session"].role
    return [t for t in answer["items"] if not t.get("roles") or role in t["roles"]]


def _render_list(
    request: web.Request,
    answer: dict[str, Any],
    types: list[dict[str, Any]],
    filters: dict[str, str],
    values: dict[str, str] | None = None,
    error: str = "",
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    defaults = {
        "type": types[0]["name"] if types else "",
        "format": "csv",
        "start": (now - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M"),
        "end": now.strftime("%Y-%m-%dT%H:%M"),
        "time_zone": "UTC",
    }
    reports = answer["items"]
    return console_of(request).render(
        request,
        "reports/reports.html" if not request.get("fragment") else "reports/_list.html",
        status=status,
        reports=reports,
        next_cursor=answer.get("next_cursor"),
        active=any(r["status"] in ACTIVE for r in reports),
        types=types,
        formats=FORMATS,
        statuses=STATUSES,
        zones=_ZONES,
        filters=defaultdict(str, filters),
        values=defaultdict(str, {**defaults, **(values or {})}),
        error=error,
        errors=defaultdict(str, errors or {}),
        list_query="&".join(f"{k}={v}" for k, v in filters.items() if v),
    )


async def _listing(request: web.Request) -> tuple[dict[str, Any], dict[str, str]]:
    console = console_of(request)
    shown = query_of(request, "status", "type", "cursor")
    params: dict[str, Any] = {"limit": 50, "cursor": shown["cursor"]}
    if shown["status"] in STATUSES:
        params["status"] = shown["status"]
    if re.fullmatch(r"[a-z_]{1,64}", shown["type"]):
        params["type"] = shown["type"]
    try:
        answer = await console.client.call(request, SERVICE, "GET", "", params=params)
    except ApiProblem as problem:
        if problem.status != 422:
            raise
        request["session"].flash_message("error", problem.message)
        answer = {"items": [], "next_cursor": None}
    return answer, shown


@signed_in
async def reports_page(request: web.Request) -> web.StreamResponse:
    """``GET /reports``: the request form and the list (``?fragment=1``: the list alone, for polling)."""
    request["fragment"] = request.query.get("fragment") == "1"
    answer, shown = await _listing(request)
    types = [] if request["fragment"] else await _types(request)
    return _render_list(request, answer, types, {k: v for k, v in shown.items() if k != "cursor"})


@signed_in
async def ask(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    fields = await form(request)
    values = {k: fields.get(k, "").strip() for k in ("type", "format", "start", "end", "time_zone")}
    error = ""
    body: dict[str, Any] = {
        "type": values["type"],
        "format": values["format"],
        "time_zone": values["time_zone"] or "UTC",
        "csv_bom": fields.get("csv_bom") == "on",
    }
    try:
        body["start"] = form_time(values["start"], "start")
        body["end"] = form_time(values["end"], "end")
        if not body["start"] or not body["end"]:
            raise ValueError("start and end: give the time range of the report")
    except ValueError as exc:
        error = str(exc)
    if not error:
        try:
            made = await console.client.call(request, SERVICE, "POST", "", json_body=body)
        except ApiProblem as problem:
            if problem.status >= 500:
                raise
            answer, _shown = await _listing(request)
            return _render_list(
                request,
                answer,
                await _types(request),
                {},
                values,
                problem.message,
                problem.field_errors(),
                status=problem.status,
            )
        text = "The same report was already asked for: here it is." if made.get("deduplicated") else "Report requested."
        request["session"].flash_message("ok", text)
        return redirect(request, f"/reports/{made['id']}")
    answer, _shown = await _listing(request)
    return _render_list(request, answer, await _types(request), {}, values, error, status=422)


@signed_in
async def report_page(request: web.Request) -> web.StreamResponse:
    """One report and its progress; the progress part polls itself while the report is queued or running
    (``?fragment=1`` answers only that part)."""
    console = console_of(request)
    report_id = ident(request, "report_id")
    report = await console.client.call(request, SERVICE, "GET", f"/{report_id}")
    template = "reports/_progress.html" if request.query.get("fragment") == "1" else "reports/report.html"
    return console.render(request, template, report=report, active=report["status"] in ACTIVE)


@signed_in
async def download(request: web.Request) -> web.StreamResponse:
    """The report's file, streamed from the report service through its freshly signed link."""
    console = console_of(request)
    report_id = ident(request, "report_id")
    report = await console.client.call(request, SERVICE, "GET", f"/{report_id}")
    link = report.get("download_url")
    if report["status"] != "succeeded" or not isinstance(link, str) or not link.startswith("/"):
        raise web.HTTPConflict(reason="Not ready", text="The report has no file to download (yet).")
    base = console.client.urls[SERVICE]
    try:
        async with console.client.http.get(base + link, timeout=DOWNLOAD_TIMEOUT) as upstream:
            if upstream.status != 200:
                body = await upstream.content.read(64 * 1024)
                raise problem_of(upstream.status, dict(upstream.headers), body)
            response = web.StreamResponse(status=200)
            for name in PASSED_HEADERS:
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            response.headers["Cache-Control"] = "private, no-store"
            await response.prepare(request)
            async for piece in upstream.content.iter_chunked(64 * 1024):
                await response.write(piece)
            await response.write_eof()
            return response
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ApiProblem(503, "Service unavailable", "The report service did not answer; try again.") from exc


@signed_in
async def delete(request: web.Request) -> web.StreamResponse:
    """Cancel a queued or running report, or delete a finished one and its file."""
    console = console_of(request)
    report_id = ident(request, "report_id")
    report = await console.client.call(request, SERVICE, "GET", f"/{report_id}")
    await console.client.call(request, SERVICE, "DELETE", f"/{report_id}")
    if report["status"] in ACTIVE:
        request["session"].flash_message("ok", "The report is cancelled.")
        back = f"/reports/{report_id}"
    else:
        request["session"].flash_message("ok", "The report and its file are deleted.")
        back = "/reports"
    request["session_changed"] = True
    return redirect(request, back)


def size(value: Any) -> str:
    """Bytes as ``12.3 KiB`` and the like."""
    if value is None:
        return "—"
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def register(console: Console, router: web.UrlDispatcher) -> None:
    console.env.filters.setdefault("when", shown_time)
    console.env.filters.setdefault("size", size)
    console.section(Section("reports", "Reports", "/reports", SERVICE))
    router.add_get("/reports", reports_page)
    router.add_post("/reports", ask)
    router.add_get("/reports/{report_id}", report_page)
    router.add_get("/reports/{report_id}/download", download)
    router.add_post("/reports/{report_id}/delete", delete)
