"""Generating one report: rows streamed from the data set in keyset batches into parts, a checkpoint after
each part, then the parts assembled into the file, its SHA-256 and manifest, and ``report.completed``.

**Why a resumed run gives the same bytes.** The rows a report holds are fixed when it is asked: the data-set
query includes only rows stored before the report's creation (``RowQuery.as_of_ms``) and reads them in the
order of a unique key (time, event id). Rows are cut into parts of exactly ``chunk_rows`` rows (the value
recorded with the report's first checkpoint, so every worker cuts alike), and part ``n`` is encoded by a pure
function of its rows and of whether it is the first (header, BOM). After storing part ``n`` the worker records
``parts = n + 1`` and the last key written. A worker killed at any instruction leaves at most a half-written
part ``n`` that the next worker overwrites: it resumes after the recorded key with part ``n``. The file is
then the concatenation of the parts (CSV, NDJSON), or rendered from them by a deterministic renderer with
fixed document times (XLSX, PDF): the same bytes, the same SHA-256, whatever the interruptions.

Memory is bounded by one part (``chunk_rows`` rows) plus the renderer's own constant state (XlsxWriter
flushes each row in ``constant_memory`` mode; the PDF keeps ``PDF_TABLE_ROWS`` rows and a count per group).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from novapulse_runtime.catalog.report import ReportCompleted, ReportFailed
from novapulse_runtime.clock import from_ms, now_ms

from .filenames import file_name, manifest_name, metadata, part_name
from .formats import (
    Row,
    csv_chunk,
    format_time,
    ndjson_chunk,
    read_staged,
    render_pdf,
    render_xlsx,
    row_values,
    staged_chunk,
)
from .ports import FileStore, Observer, Outbox
from .report_types import REPORT_TYPES, ReportType
from .reports import zone_of
from .repository import Report, Repository
from .signing import LinkSigner

log = logging.getLogger(__name__)

STREAMED = ("csv", "ndjson")
"""Formats whose parts, concatenated, are the file (no copy at the end; downloads read across parts)."""
MAX_ATTEMPTS = 3
"""Claims of one report (those of workers that died included) after which an error fails it instead of
releasing it for another attempt."""


@dataclass(frozen=True)
class GenerationConfig:
    """``batch_rows``: rows per MongoDB query; ``chunk_rows``: rows per part; ``lease_ms``: lease length;
    ``file_ttl_ms``: how long the file is kept; ``max_rows``: rows a report may hold."""

    batch_rows: int
    chunk_rows: int
    lease_ms: int
    file_ttl_ms: int
    max_rows: int


class Lost(Exception):
    """The report was cancelled, or its lease was taken over: stop without touching it."""


class Stopping(Exception):
    """The worker is shutting down: give the report back at its checkpoint."""


class Generator:
    """Runs claimed reports to their end (or to the next checkpoint when stopped)."""

    def __init__(
        self,
        repo: Repository,
        files: FileStore,
        outbox: Outbox,
        signer: LinkSigner,
        config: GenerationConfig,
        owner: str,
        observer: Observer,
    ) -> None:
        self.repo = repo
        self.files = files
        self.outbox = outbox
        self.signer = signer
        self.config = config
        self.owner = owner
        self.observer = observer

    async def run(self, report: Report, stop: asyncio.Event) -> str:
        """Generate ``report`` (claimed by this worker). Returns the outcome: ``succeeded``, ``failed``,
        ``lost`` (cancelled or taken over), ``released`` (stopping, or an error worth another attempt)."""
        started = time.monotonic()
        self.observer.claimed(max(0.0, (now_ms() - report.created_ms) / 1000), first=report.attempts == 1)
        outcome = await self._run(report, stop)
        self.observer.run(report.type, report.format, outcome, time.monotonic() - started)
        return outcome

    async def _run(self, report: Report, stop: asyncio.Event) -> str:
        lost = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(report.id, lost))
        try:
            await self._generate(report, stop, lost)
            return "succeeded"
        except Lost:
            await self._drop_parts_if_cancelled(report.id)
            return "lost"
        except Stopping:
            await self.repo.release(report.id, self.owner)
            return "released"
        except TooLarge as exc:
            await self._fail(report, str(exc))
            return "failed"
        except Exception as exc:
            log.exception("report generation failed", extra={"report_id": report.id, "attempt": report.attempts})
            if report.attempts >= MAX_ATTEMPTS:
                await self._fail(report, f"generation failed after {report.attempts} attempts: {type(exc).__name__}")
                return "failed"
            await self.repo.release(report.id, self.owner, now_ms() + 1000 * report.attempts)
            return "released"
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _heartbeat(self, report_id: str, lost: asyncio.Event) -> None:
        interval = self.config.lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                held = await self.repo.heartbeat(report_id, self.owner, now_ms() + self.config.lease_ms)
            except Exception:  # a failed renewal is retried at the next beat; the lease outlasts two of them
                log.warning("lease renewal failed", exc_info=True, extra={"report_id": report_id})
                continue
            if not held:
                lost.set()
                return

    async def _drop_parts_if_cancelled(self, report_id: str) -> None:
        current = await self.repo.get_any_report(report_id)
        if current is None or current.status == "cancelled":
            await self.files.delete_files(report_id, "part")

    # stage 1: rows → parts, with checkpoints ---------------------------------------------------------------

    async def _generate(self, report: Report, stop: asyncio.Event, lost: asyncio.Event) -> None:
        rtype = REPORT_TYPES[report.type]
        zone = zone_of(report.params["time_zone"])
        rows = report.rows()
        chunk_rows = report.chunk_rows or self.config.chunk_rows
        part, key = report.parts, report.checkpoint_key
        done, stored = report.rows_done, report.bytes_done
        estimate = report.estimated_total  # counted when it was asked (over the same snapshot)
        started, resumed_at = time.monotonic(), done
        # windows of row time expected to hold about one part each (at least a second)
        window_ms = max(1000, (rows.end_ms - rows.start_ms) * chunk_rows // max(1, estimate))
        streamed = report.format in STREAMED
        digest, sizes = hashlib.sha256(), []
        if streamed:  # resuming: the checksum so far, from the parts already stored
            for index in range(part):
                size = 0
                async for piece in self.files.read(part_name(report.id, index)):
                    digest.update(piece)
                    size += len(piece)
                sizes.append(size)
        source = self.repo.stream_rows(rows, key, self.config.batch_rows, window_ms)
        try:
            while True:
                if lost.is_set():
                    raise Lost
                if stop.is_set():
                    raise Stopping
                chunk: list[Row] = []
                last = key
                async for row_key, values in source:
                    chunk.append(row_values(rtype, values, zone))
                    last = row_key
                    if len(chunk) >= chunk_rows:
                        break
                if not chunk and part > 0:
                    break
                if done + len(chunk) > self.config.max_rows:
                    raise TooLarge(f"the report holds more than {self.config.max_rows} rows")
                data = self._encode(report, rtype, chunk, first=part == 0)
                stored += await self.files.write(part_name(report.id, part), _one(data), metadata(report.id, "part"))
                if streamed:
                    digest.update(data)
                    sizes.append(len(data))
                part, key, done = part + 1, last, done + len(chunk)
                self.observer.rows_written(report.format, len(chunk))
                elapsed = time.monotonic() - started
                ok = await self.repo.checkpoint(
                    report.id,
                    self.owner,
                    now_ms() + self.config.lease_ms,
                    parts=part,
                    checkpoint_key=key,
                    rows_done=done,
                    bytes_done=stored,
                    chunk_rows=chunk_rows,
                    estimated_total=max(estimate, done),
                    rows_per_s=round((done - resumed_at) / elapsed, 1) if elapsed > 0 else 0.0,
                )
                if not ok:
                    raise Lost
                if len(chunk) < chunk_rows:
                    break
        finally:
            await source.aclose()
        await self._assemble(report, rtype, part, done, lost, digest if streamed else None, sizes)

    def _encode(self, report: Report, rtype: ReportType, chunk: list[Row], *, first: bool) -> bytes:
        p = report.params
        if report.format == "csv":
            return csv_chunk(
                chunk,
                rtype.column_names,
                header=first,
                bom=bool(p["csv_bom"]),
                neutralize_formulas=bool(p["neutralize_formulas"]),
            )
        if report.format == "ndjson":
            return ndjson_chunk(chunk, rtype.column_names)
        return staged_chunk(chunk)

    # stage 2: parts → file, manifest, event -----------------------------------------------------------------

    async def _assemble(
        self,
        report: Report,
        rtype: ReportType,
        parts: int,
        rows: int,
        lost: asyncio.Event,
        streamed: hashlib._Hash | None,
        sizes: list[int],
    ) -> None:
        """CSV and NDJSON (``streamed``: their checksum so far): the parts, in order, are the file; nothing is
        copied. XLSX and PDF: rendered from the staged parts into one file, hashed as it is stored."""
        digest = streamed or hashlib.sha256()
        name = file_name(report)
        if streamed is not None:
            size = sum(sizes)
        else:
            with tempfile.TemporaryDirectory(prefix="novapulse-report-") as tmp:
                staged, out = Path(tmp) / "rows.ndjson", Path(tmp) / f"report.{report.format}"
                with staged.open("wb") as fh:
                    async for piece in self._parts(report.id, parts):
                        fh.write(piece)
                await asyncio.to_thread(self._render, report, rtype, staged, out, rows)
                size = await self.files.write(name, _hashed(_file_pieces(out), digest), metadata(report.id, "file"))
        if lost.is_set():
            raise Lost
        sha256 = digest.hexdigest()
        now = now_ms()
        expires = now + self.config.file_ttl_ms
        manifest = {
            "report_id": report.id,
            "org_id": report.org_id,
            "type": report.type,
            "format": report.format,
            "parameters": report.params,
            "row_count": rows,
            "size": size,
            "sha256": sha256,
            "created_ms": report.created_ms,
            "files": [part_name(report.id, i) for i in range(parts)] if streamed is not None else [name],
            "part_sizes": sizes if streamed is not None else [size],
        }
        await self.files.write(
            manifest_name(report), _one(json.dumps(manifest, sort_keys=True).encode()), metadata(report.id, "manifest")
        )
        link = self.signer.path(report.id, report.org_id, expires // 1000)
        async with self.outbox.transaction() as session:
            finished = await self.repo.finish(
                report.id,
                self.owner,
                now,
                session=session,
                status="succeeded",
                row_count=rows,
                rows_done=rows,
                sha256=sha256,
                size=size,
                expires_ms=expires,
                part_sizes=sizes if streamed is not None else [],
            )
            if finished:
                await self.outbox.add(
                    "report.completed",
                    ReportCompleted(
                        report_id=report.id,
                        org_id=report.org_id,
                        requested_by=report.requested_by,
                        name=rtype.title,
                        format=report.format,
                        download_path=link,
                        row_count=rows,
                        sha256=sha256,
                        expires_at=from_ms(expires).isoformat(),
                        request_id=report.request_id,
                    ),
                    org_id=report.org_id,
                    subject=report.id,
                    session=session,
                )
        if not finished:
            await self.files.delete_files(report.id)
            raise Lost
        if streamed is None:
            await self.files.delete_files(report.id, "part")
        log.info("report generated", extra={"report_id": report.id, "rows": rows, "bytes": size})

    def _render(self, report: Report, rtype: ReportType, staged: Path, out: Path, rows: int) -> None:
        created = from_ms(report.created_ms)
        with staged.open("rb") as fh:
            if report.format == "xlsx":
                render_xlsx(read_staged(fh), rtype, out, created)
            else:
                zone = zone_of(report.params["time_zone"])
                p = report.params
                parameters = [
                    ("from", format_time(p["start_ms"], zone)),
                    ("to", format_time(p["end_ms"], zone)),
                    ("time zone", p["time_zone"]),
                    ("filters", ", ".join(f"{k}={v}" for k, v in p["filters"].items()) or "none"),
                ]
                render_pdf(read_staged(fh), rtype, out, created, parameters=parameters, total_rows=rows)

    async def _parts(self, report_id: str, parts: int) -> AsyncIterator[bytes]:
        for index in range(parts):
            async for piece in self.files.read(part_name(report_id, index)):
                yield piece

    async def _fail(self, report: Report, error: str) -> None:
        rtype = REPORT_TYPES.get(report.type)
        async with self.outbox.transaction() as session:
            failed = await self.repo.finish(
                report.id, self.owner, now_ms(), session=session, status="failed", error=error
            )
            if failed:
                await self.outbox.add(
                    "report.failed",
                    ReportFailed(
                        report_id=report.id,
                        org_id=report.org_id,
                        requested_by=report.requested_by,
                        name=rtype.title if rtype else report.type,
                        format=report.format,
                        error=error,
                        request_id=report.request_id,
                    ),
                    org_id=report.org_id,
                    subject=report.id,
                    session=session,
                )
        await self.files.delete_files(report.id, "part")
        await self.repo.release_dedup(report.dedup_key, report.id)


class TooLarge(Exception):
    """The report outgrew ``MAX_ROWS_PER_REPORT`` while running."""


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _hashed(pieces: AsyncIterable[bytes], digest: hashlib._Hash) -> AsyncIterator[bytes]:
    async for piece in pieces:
        digest.update(piece)
        yield piece


async def _file_pieces(path: Path, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        for piece in _read(fh, size):
            yield piece


def _read(fh: object, size: int) -> Iterator[bytes]:
    read = fh.read  # type: ignore[attr-defined]
    while piece := read(size):
        yield piece
