"""Use cases of reports as users see them: ask (deduplicated, within limits), look, list, cancel or delete,
and open the file for download. Domain logic only: raises domain errors (``errors.py``), knows no HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from novapulse_runtime.bus.tracing import inject_current
from novapulse_runtime.clock import now_ms, to_ms

from .errors import (
    InvalidParameters,
    LinkExpired,
    NotReady,
    RangeNotSatisfiable,
    ReportNotFound,
    RoleNotAllowed,
    StorageFull,
    TooManyInFlight,
    TooManyRows,
)
from .filenames import file_name, part_name
from .ports import FileStore
from .report_types import FORMATS, REPORT_TYPES, ReportType
from .repository import IN_FLIGHT, Report, Repository, RowQuery, new_report_id
from .signing import LinkSigner

DEDUP_TRIES = 3
"""Rounds of claiming a deduplication key that other requests keep re-pointing before storing anyway."""
DEDUP_SETTLE_SECONDS = 2.0
"""How long a request waits for the report of an identical request that claimed the key first."""


@dataclass(frozen=True)
class Limits:
    """Per-organisation limits (see :class:`~novapulse_report.settings.ReportSettings`)."""

    max_in_flight: int
    max_rows: int
    max_bytes: int
    max_range_days: int
    dedup_window_ms: int


@dataclass(frozen=True)
class ReportRequest:
    """What a caller asks for: ``start``/``end`` aware datetimes (``start`` included, ``end`` excluded),
    ``time_zone`` an IANA name, ``filters`` column → value."""

    type: str
    format: str
    start: datetime
    end: datetime
    time_zone: str = "UTC"
    filters: dict[str, str] | None = None
    csv_bom: bool = False
    neutralize_formulas: bool = True
    request_id: str = ""
    """Set by the ``report.requested`` command: the report carries it into its ``report.completed`` /
    ``report.failed``, and deduplication is per request id (each command gets its own answer; the same
    command redelivered gets the same report)."""


@dataclass(frozen=True)
class Asked:
    """The answer to a request: the report and whether an identical one was reused."""

    report: Report
    deduplicated: bool


@dataclass(frozen=True)
class Download:
    """A file to send: its bytes ``start``..``end`` (exclusive) of ``size``, read from ``pieces``."""

    report: Report
    size: int
    start: int
    end: int
    pieces: AsyncIterator[bytes]


def zone_of(name: str) -> ZoneInfo:
    """The IANA time zone ``name``.

    :raises InvalidParameters: not a zone of the IANA database.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidParameters(f"Unknown time zone {name!r}: use an IANA name such as Europe/Paris") from exc


def normalize(req: ReportRequest, max_range_days: int) -> tuple[ReportType, dict[str, Any]]:
    """Check a request against the report-type table and return its type and normalised parameters (epoch
    milliseconds, sorted filters, booleans), the form stored and hashed for deduplication.

    :raises InvalidParameters: unknown type, format or filter, bad zone, empty, reversed or too long range.
    """
    rtype = REPORT_TYPES.get(req.type)
    if rtype is None:
        raise InvalidParameters(f"Unknown report type {req.type!r}; one of {sorted(REPORT_TYPES)}")
    if req.format not in FORMATS:
        raise InvalidParameters(f"Unknown format {req.format!r}; one of {sorted(FORMATS)}")
    zone_of(req.time_zone)
    start_ms, end_ms = to_ms(req.start), to_ms(req.end)
    if end_ms <= start_ms:
        raise InvalidParameters("The time range is empty: end must be after start")
    if end_ms - start_ms > max_range_days * 86_400_000:
        raise InvalidParameters(f"The time range is longer than {max_range_days} days")
    filters = dict(sorted((req.filters or {}).items()))
    unknown = sorted(set(filters) - set(rtype.filters))
    if unknown:
        raise InvalidParameters(f"Report type {rtype.name} has no filter {unknown}; it takes {list(rtype.filters)}")
    params = {
        "start_ms": start_ms,
        "end_ms": end_ms,
        "time_zone": req.time_zone,
        "filters": filters,
        "csv_bom": bool(req.csv_bom) and req.format == "csv",
        "neutralize_formulas": bool(req.neutralize_formulas),
    }
    return rtype, params


def dedup_key(org_id: str, type_: str, format_: str, params: dict[str, Any]) -> str:
    """SHA-256 (hex) of the organisation, type, format and normalised parameters: identical requests, and
    only they, share a key."""
    canonical = json.dumps([org_id, type_, format_, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ReportService:
    """Reports of one organisation at a time: every method takes the caller's organisation."""

    def __init__(self, repo: Repository, files: FileStore, signer: LinkSigner, limits: Limits) -> None:
        self.repo = repo
        self.files = files
        self.signer = signer
        self.limits = limits

    async def request(self, org_id: str, user_id: str, role: str, req: ReportRequest) -> Asked:
        """Ask for a report (``POST /reports`` and the ``report.requested`` command).

        An identical request (same organisation, type, format and normalised parameters) while the earlier
        report is queued or running, or succeeded less than ``DEDUP_WINDOW_SECONDS`` ago and not expired,
        returns that report. Otherwise a new ``queued`` report is stored.

        :raises InvalidParameters: see :func:`normalize`.
        :raises RoleNotAllowed: ``role`` may not ask for this type.
        :raises TooManyRows: the report would exceed ``MAX_ROWS_PER_REPORT`` rows.
        :raises TooManyInFlight: the organisation has ``MAX_IN_FLIGHT_PER_ORG`` reports in flight (429).
        :raises StorageFull: the organisation's files reach ``MAX_BYTES_PER_ORG`` (409).
        """
        rtype, params = normalize(req, self.limits.max_range_days)
        if role not in rtype.roles:
            raise RoleNotAllowed(f"Report type {rtype.name} is for the roles {list(rtype.roles)}")
        key = dedup_key(org_id, rtype.name, req.format, {"request_id": req.request_id} if req.request_id else params)
        now = now_ms()
        current = await self._current(org_id, key, now)
        if current is not None:
            return Asked(current, True)
        if await self.repo.count_in_flight(org_id) >= self.limits.max_in_flight:
            raise TooManyInFlight(
                f"An organisation may have {self.limits.max_in_flight} reports queued or running", retry_after=10
            )
        if await self.repo.bytes_stored(org_id) >= self.limits.max_bytes:
            raise StorageFull(f"Stored reports reach {self.limits.max_bytes} bytes: delete some first")
        rows = RowQuery(rtype.name, org_id, params["start_ms"], params["end_ms"], now, params["filters"])
        estimate = await self.repo.count_rows(rows)
        if estimate > self.limits.max_rows:
            raise TooManyRows(
                f"The report would hold {estimate} rows, more than {self.limits.max_rows}: "
                "narrow the time range or add filters"
            )
        # the key is claimed before the report is stored, so an identical request racing this one never
        # sees a report that is then withdrawn
        report_id = new_report_id(now)
        for _ in range(DEDUP_TRIES):
            holder = await self.repo.claim_dedup(key, report_id)
            if holder is None:
                break
            other = await self._stored(org_id, holder)
            if other is not None and self._is_current(other, now):  # an identical request won the race
                return Asked(other, True)
            if await self.repo.move_dedup(key, holder, report_id):
                break
        report = await self.repo.insert_report(
            report_id=report_id,
            org_id=org_id,
            requested_by=user_id,
            type_=rtype.name,
            format_=req.format,
            params=params,
            dedup_key=key,
            now_ms=now,
            estimated_total=estimate,
            traceparent=inject_current()[0] or "",
            request_id=req.request_id,
        )
        return Asked(report, False)

    async def _stored(self, org_id: str, report_id: str) -> Report | None:
        """The report a deduplication key points to, waiting up to ``DEDUP_SETTLE_SECONDS`` for the request
        that claimed the key to store it; ``None`` when it never appears (that request failed)."""
        deadline = asyncio.get_running_loop().time() + DEDUP_SETTLE_SECONDS
        while True:
            report = await self.repo.get_report(org_id, report_id)
            if report is not None or asyncio.get_running_loop().time() > deadline:
                return report
            await asyncio.sleep(0.02)

    async def _current(self, org_id: str, key: str, now: int) -> Report | None:
        holder = await self.repo.dedup_holder(key)
        if not holder:
            return None
        report = await self.repo.get_report(org_id, holder)
        return report if report is not None and self._is_current(report, now) else None

    def _is_current(self, report: Report, now: int) -> bool:
        if report.status in IN_FLIGHT:
            return True
        return (
            report.status == "succeeded"
            and report.expires_ms > now
            and now - report.finished_ms <= self.limits.dedup_window_ms
        )

    async def get(self, org_id: str, report_id: str, *, role: str) -> Report:
        """One report of ``org_id`` of a type ``role`` may ask for.

        :raises ReportNotFound: none with that id in ``org_id`` (another organisation's report, or one of a
            type the role may not see, included: its existence is not disclosed).
        """
        report = await self.repo.get_report(org_id, report_id)
        rtype = REPORT_TYPES.get(report.type) if report else None
        if report is None or rtype is None or role not in rtype.roles:
            raise ReportNotFound("No such report")
        return report

    async def list(
        self,
        org_id: str,
        role: str,
        after: str | None,
        count: int,
        *,
        status: str | None = None,
        type_: str | None = None,
    ) -> list[Report]:
        """Up to ``count`` reports of the types ``role`` may ask for, after the id ``after`` (a page read
        with ``limit + 1``)."""
        types = [t.name for t in REPORT_TYPES.values() if role in t.roles and (type_ is None or t.name == type_)]
        return await self.repo.list_reports(org_id, after, count, status=status, types=types)

    def link(self, report: Report, ttl_s: int) -> str | None:
        """A freshly signed download link of a succeeded report, valid ``ttl_s`` seconds but never past the
        file's expiry; ``None`` when there is no file."""
        if report.status != "succeeded":
            return None
        expires = min(now_ms() // 1000 + ttl_s, report.expires_ms // 1000)
        return self.signer.path(report.id, report.org_id, expires)

    async def cancel_or_delete(self, org_id: str, report_id: str, *, role: str) -> str:
        """Cancel a queued or running report (it stays listed as ``cancelled``; its worker stops at the next
        checkpoint and removes its parts), or delete a finished one with its file. Returns ``cancelled`` or
        ``deleted``.

        :raises ReportNotFound: none with that id in ``org_id``.
        """
        report = await self.get(org_id, report_id, role=role)
        await self.repo.release_dedup(report.dedup_key, report.id)
        if report.status in IN_FLIGHT and await self.repo.cancel(org_id, report_id, now_ms()):
            return "cancelled"
        await self.files.delete_files(report.id)
        await self.repo.delete_report(org_id, report_id)
        return "deleted"

    async def download(
        self, report_id: str, expires: str, sig: str, byte_range: tuple[int | None, int | None]
    ) -> Download:
        """Open the file behind a signed link, for the bytes of ``byte_range`` (``(first, last)`` inclusive
        as in an HTTP ``Range``; ``(None, n)``: the last ``n`` bytes; ``(None, None)``: all).

        :raises ReportNotFound: no such report.
        :raises LinkInvalid: the signature does not check out (403).
        :raises LinkExpired: the link or the file has expired (410).
        :raises NotReady: the report has no file (409).
        :raises RangeNotSatisfiable: the range lies outside the file.
        """
        report = await self.repo.get_any_report(report_id)
        if report is None:
            raise ReportNotFound("No such report")
        self.signer.check(report.id, report.org_id, expires, sig, now_ms() // 1000)
        if report.status == "expired" or (report.status == "succeeded" and report.expires_ms <= now_ms()):
            raise LinkExpired("The report's file has expired and was deleted")
        if report.status != "succeeded":
            raise NotReady(f"The report is {report.status}: it has no file")
        size = report.size
        first, last = byte_range
        if first is None and last is None:
            start, end = 0, size
        elif first is None:
            start, end = max(0, size - (last or 0)), size
        else:
            start, end = first, size if last is None else min(last + 1, size)
        if (start >= end and size > 0) or start > size:
            raise RangeNotSatisfiable(f"The file has {size} bytes", size=size)
        pieces = (
            self._across_parts(report, start, end)
            if report.part_sizes
            else self.files.read(file_name(report), start, end)
        )
        return Download(report, size, start, end, pieces)

    async def _across_parts(self, report: Report, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start``..``end`` of a file stored as consecutive parts (CSV, NDJSON)."""
        offset = 0
        for index, size in enumerate(report.part_sizes):
            low, high = max(start, offset), min(end, offset + size)
            if low < high:
                async for piece in self.files.read(part_name(report.id, index), low - offset, high - offset):
                    yield piece
            offset += size
