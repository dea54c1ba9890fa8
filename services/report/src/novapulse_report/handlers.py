"""Events the report service reacts to: one table from event type to handler, and the consumer (group
``report``) the worker root runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from novapulse_runtime.bus import Event, PermanentError
from novapulse_runtime.catalog.workflow import ReportRequested
from novapulse_runtime.errors import DomainError

from .datasets import PROJECTIONS, DataSets
from .refusals import Refusals
from .reports import ReportRequest, ReportService

Handler = Callable[[Event], Awaitable[None]]


def handlers(datasets: DataSets, reports: ReportService, refusals: Refusals) -> dict[str, Handler]:
    """Event type → handler. Handlers are idempotent (the bus delivers at least once): a row is stored once
    per event id, and a repeated ``report.requested`` is deduplicated like an identical API request.

    A ``report.requested`` the API would refuse (unknown type or filter, bad zone or range, too many rows,
    an organisation limit) is answered with ``report.failed`` (its ``request_id``, a ``code``, the reason),
    once per command, so the workflow step that asked fails at once and its retry or catch applies. Only a
    command that cannot be answered (not a ``ReportRequested``, no ``org_id``, or refused without a
    ``request_id`` to correlate the answer with) is dead-lettered."""

    async def on_fact(event: Event) -> None:
        await datasets.record(event)

    async def on_report_requested(event: Event) -> None:
        try:
            data = event.data_as(ReportRequested)
        except ValidationError as exc:
            raise PermanentError(f"report.requested malformed: {exc.error_count()} errors") from exc
        if not data.org_id:
            raise PermanentError("report.requested without org_id")
        req = ReportRequest(
            type=data.type,
            format=data.format,
            start=data.start,
            end=data.end,
            time_zone=data.time_zone,
            filters=dict(data.filters),
            csv_bom=data.csv_bom,
            neutralize_formulas=data.neutralize_formulas,
            request_id=data.request_id,
        )
        try:
            # the command comes from the platform (private type): the role check is the workflow's
            await reports.request(data.org_id, data.requested_by, "owner", req)
        except DomainError as exc:  # a request the API would refuse: retrying the command cannot help
            if not data.request_id:
                raise PermanentError(f"report.requested refused: {exc.detail}") from exc
            await refusals.refuse(data, exc)

    table: dict[str, Handler] = dict.fromkeys(PROJECTIONS, on_fact)
    table["report.requested"] = on_report_requested
    return table
