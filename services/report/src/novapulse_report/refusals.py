"""Answering a ``report.requested`` command the service refuses (what ``POST /reports`` would answer with a
4xx/429): a ``report.failed`` carrying the command's ``request_id``, a ``code`` and the reason, so the workflow
step that asked fails at once instead of at its timeout."""

from __future__ import annotations

import contextlib
import logging

from pymongo.errors import DuplicateKeyError

from novapulse_runtime.bus.envelope import new_event_id
from novapulse_runtime.catalog.report import ReportFailed
from novapulse_runtime.catalog.workflow import ReportRequested
from novapulse_runtime.clock import now_ms
from novapulse_runtime.errors import DomainError

from .errors import InvalidParameters, RoleNotAllowed, StorageFull, TooManyInFlight, TooManyRows
from .ports import Outbox
from .report_types import REPORT_TYPES
from .repository import Repository

log = logging.getLogger(__name__)

CODES: dict[type[DomainError], str] = {
    InvalidParameters: "invalid_parameters",
    TooManyRows: "too_many_rows",
    TooManyInFlight: "too_many_in_flight",
    StorageFull: "storage_full",
    RoleNotAllowed: "role_not_allowed",
}
"""The ``code`` of the ``report.failed`` answering a refusal, by domain error (``refused`` for others)."""


def code_of(exc: DomainError) -> str:
    return next((code for cls, code in CODES.items() if isinstance(exc, cls)), "refused")


class Refusals:
    """Answers refused commands through the outbox, once per command (``Repository.refusal``)."""

    def __init__(self, repo: Repository, outbox: Outbox) -> None:
        self.repo = repo
        self.outbox = outbox

    async def refuse(self, command: ReportRequested, exc: DomainError) -> bool:
        """Answer ``command`` (which has an ``org_id`` and a ``request_id``) with ``report.failed``; False when
        it was answered already (a redelivery). The answer's event id is fixed at the first handling: a
        crash between writing the answer and marking it written makes the redelivery write it again under
        the same id, which the outbox refuses while the first copy waits and consumers dedupe after."""
        event_id, answered = await self.repo.refusal(command.org_id, command.request_id, new_event_id(), now_ms())
        if answered:
            return False
        rtype = REPORT_TYPES.get(command.type)
        answer = ReportFailed(
            report_id="",
            org_id=command.org_id,
            requested_by=command.requested_by,
            name=rtype.title if rtype else command.type,
            format=command.format,
            error=f"report.requested refused: {exc.detail or type(exc).__name__}"[:500],
            request_id=command.request_id,
            code=code_of(exc),
        )
        with contextlib.suppress(DuplicateKeyError):  # the first handling's copy still waits for the relay
            await self.outbox.add(
                "report.failed", answer, org_id=command.org_id, subject=command.request_id, event_id=event_id
            )
        await self.repo.mark_answered(command.org_id, command.request_id)
        log.info("report.requested refused", extra={"request_id": command.request_id, "code": answer.code})
        return True
