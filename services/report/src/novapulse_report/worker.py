"""Background work of the report service: the generation loop (claims reports under a lease and runs them)
and the retention job (expires files past ``FILE_TTL_HOURS``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from opentelemetry.trace import Tracer

from novapulse_runtime.bus.tracing import extract
from novapulse_runtime.clock import now_ms

from .constants import PURGE_BATCH, REFUSAL_KEEP_MS
from .generation import Generator
from .ports import FileStore, Observer
from .repository import Repository

log = logging.getLogger(__name__)


class GenerationWorker:
    """Takes the oldest queued report (or a running one whose worker died: its lease ran out) and generates
    it; waits ``poll_seconds`` when there is none. One report at a time per loop."""

    def __init__(
        self, repo: Repository, generator: Generator, lease_ms: int, poll_seconds: float, tracer: Tracer
    ) -> None:
        self.repo = repo
        self.tracer = tracer
        self.generator = generator
        self.lease_ms = lease_ms
        self.poll_seconds = poll_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """Generate reports until ``stop`` is set; a report being generated then is given back at its last
        checkpoint, for another worker to resume."""
        while not stop.is_set():
            report = None
            try:
                report = await self.repo.claim_next(self.generator.owner, now_ms(), self.lease_ms)
                if report is not None:
                    attributes: dict[str, str | int] = {
                        "report.id": report.id,
                        "report.type": report.type,
                        "report.format": report.format,
                        "report.attempt": report.attempts,
                    }
                    with self.tracer.start_as_current_span(
                        "report.generate", context=extract(report.traceparent or None, None), attributes=attributes
                    ) as span:  # continues the trace of the request that asked for it
                        outcome = await self.generator.run(report, stop)
                        span.set_attribute("report.outcome", outcome)
                    log.info("report run ended", extra={"report_id": report.id, "outcome": outcome})
                    continue
            except Exception:
                log.exception("generation loop failed", extra={"report_id": report.id if report else ""})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_seconds)


class RetentionWorker:
    """Every ``interval_seconds``: reports whose file is past its expiry become ``expired`` and their files
    (and manifests, and parts left by cancelled runs) are deleted; refused commands older than
    ``REFUSAL_KEEP_MS`` are forgotten."""

    def __init__(self, repo: Repository, files: FileStore, observer: Observer, interval_seconds: float) -> None:
        self.repo = repo
        self.observer = observer
        self.files = files
        self.interval_seconds = interval_seconds

    async def purge_once(self) -> int:
        """One pass; returns how many reports expired."""
        total = 0
        now = now_ms()
        while reports := await self.repo.due_for_expiry(now, PURGE_BATCH):
            for report in reports:
                await self.files.delete_files(report.id)
                await self.repo.mark_expired(report.id, now)
                await self.repo.release_dedup(report.dedup_key, report.id)
                total += 1
        await self.repo.purge_refusals(now - REFUSAL_KEEP_MS)
        self.observer.retention(total, await self.repo.total_bytes_stored())
        if total:
            log.info("expired reports deleted", extra={"count": total})
        return total
