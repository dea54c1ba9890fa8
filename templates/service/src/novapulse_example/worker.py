"""Background work of the example service."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from novapulse_runtime.clock import now_ms

from .constants import PURGE_BATCH
from .repository import Repository

log = logging.getLogger(__name__)


class RetentionWorker:
    """Deletes notes older than ``retention_days``, every ``interval_seconds``, ``PURGE_BATCH`` at a time."""

    def __init__(self, repo: Repository, retention_days: int, interval_seconds: float) -> None:
        self.repo = repo
        self.retention_ms = retention_days * 86_400_000
        self.interval_seconds = interval_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """Purge until ``stop`` is set; a failed pass is logged and retried at the next interval."""
        while not stop.is_set():
            try:
                await self.purge_once()
            except Exception:
                log.exception("retention pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_seconds)

    async def purge_once(self) -> int:
        """One pass: delete every expired note, batch by batch. Returns how many were deleted."""
        before = now_ms() - self.retention_ms
        total = 0
        while (deleted := await self.repo.purge_notes(before, PURGE_BATCH)) > 0:
            total += deleted
        if total:
            log.info("expired notes deleted", extra={"count": total})
        return total
