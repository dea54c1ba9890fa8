"""The ``report`` step's two ends: the ``report.requested`` command it sends, and what the report service's
answer (``report.completed`` / ``report.failed``, correlated by ``data.request_id``) makes of the step."""

from __future__ import annotations

from typing import Any

from novapulse_runtime.catalog.workflow import ReportRequested
from novapulse_runtime.clock import from_ms

from .expressions import render
from .language import ReportStep


class ReportFailedError(Exception):
    """The report service answered ``report.failed`` (``str(exc)`` is its error)."""


def report_request(step: ReportStep, ctx: dict[str, Any], org_id: str, request_id: str, now_ms: int) -> ReportRequested:
    """The ``report.requested`` data of ``step`` rendered over ``ctx`` at ``now_ms`` (epoch ms; the end of a
    ``last_seconds`` period). Raises ``ExpressionError`` for a template that fails on its data and
    ``pydantic.ValidationError`` (a ``ValueError``) for rendered values that do not fit (a time without an
    offset, a user id that is not text)."""
    inputs = render(
        {"requested_by": step.requested_by, "start": step.start, "end": step.end, "filters": step.filters}, ctx
    )
    if step.last_seconds is not None:
        end_ms = now_ms
        start: Any = from_ms(end_ms - int(step.last_seconds * 1000)).isoformat()
        end: Any = from_ms(end_ms).isoformat()
    else:
        start, end = inputs["start"], inputs["end"]
    return ReportRequested.model_validate(
        {
            "org_id": org_id,
            "requested_by": inputs["requested_by"],
            "type": step.report_type,
            "format": step.format,
            "start": start,
            "end": end,
            "time_zone": step.time_zone,
            "filters": inputs["filters"],
            "csv_bom": step.csv_bom,
            "neutralize_formulas": step.neutralize_formulas,
            "request_id": request_id,
        }
    )


def report_output(reply: dict[str, Any]) -> dict[str, Any]:
    """The step output for the answer ``reply`` (an event as JSON): ``{report_id, row_count, sha256,
    expires_at, request_id}`` for ``report.completed``. Raises :class:`ReportFailedError` for
    ``report.failed``."""
    data = reply.get("data") or {}
    if reply.get("type") == "report.failed":
        raise ReportFailedError(str(data.get("error") or "the report failed")[:400])
    return {
        "report_id": data.get("report_id", ""),
        "row_count": data.get("row_count", 0),
        "sha256": data.get("sha256", ""),
        "expires_at": data.get("expires_at", ""),
        "request_id": data.get("request_id", ""),
    }
