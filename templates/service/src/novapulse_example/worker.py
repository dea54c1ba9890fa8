"""Background work of the example service."""

from __future__ import annotations

import logging

from novapulse_runtime.clock import now_ms

from .constants import PURGE_BATCH
from .repository import Repository

log = logging.getLogger(__name__)


class Retention:
    """Deletes notes older than ``retention_days``, ``PURGE_BATCH`` at a time (the worker root runs
    :meth:`purge_once` every ``PURGE_INTERVAL_SECONDS`` with :func:`~novapulse_runtime.process.periodic`)."""

    def __init__(self, repo: Repository, retention_days: int) -> None:
        self.repo = repo
        self.retention_ms = retention_days * 86_400_000

    async def purge_once(self) -> int:
        """One pass: delete every expired note, batch by batch. Returns how many were deleted."""
        before = now_ms() - self.retention_ms
        total = 0
        while (deleted := await self.repo.purge_notes(before, PURGE_BATCH)) > 0:
            total += deleted
        if total:
            log.info("expired notes deleted", extra={"count": total})
        return total
