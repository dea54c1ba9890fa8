"""The report types, in one table: each names its data set (a projection this service keeps from events),
its columns with their types, the filters it takes, its default sort and the roles that may ask for it.

A report type's data set has the same name as the type. Rows are sorted by ``time`` then event id (the
``key`` of :mod:`.repository`), the only sort: it is the keyset the worker pages and checkpoints by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from novapulse_runtime.roles import MANAGERS, Role

ColumnKind = Literal["datetime", "string", "integer"]
ALL_ROLES: tuple[str, ...] = (Role.OWNER.value, Role.ADMIN.value, Role.MEMBER.value)


@dataclass(frozen=True)
class Column:
    """One column: ``name`` (CSV header, NDJSON key), ``kind`` (``datetime``: written in the report's time
    zone as RFC 3339 with its offset; ``integer``: a number; ``string``: text)."""

    name: str
    kind: ColumnKind


@dataclass(frozen=True)
class ReportType:
    """One report type. ``filters``: string columns a request may pin to one value (equality);
    ``group_by``: the column the PDF summary counts rows by; ``fed_by``: the event types that fill its data
    set (empty: no producer publishes them yet, the report is empty)."""

    name: str
    title: str
    columns: tuple[Column, ...]
    filters: tuple[str, ...]
    roles: tuple[str, ...]
    group_by: str
    fed_by: tuple[str, ...]
    default_sort: str = "time ascending, then event id"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _cols(spec: str) -> tuple[Column, ...]:
    out = []
    for part in spec.split():
        name, _, kind = part.partition(":")
        out.append(Column(name, kind or "string"))  # type: ignore[arg-type]
    return tuple(out)


REPORT_TYPES: dict[str, ReportType] = {
    t.name: t
    for t in (
        ReportType(
            name="auth_activity",
            title="Sign-in, MFA and membership activity",
            columns=_cols("time:datetime event user_id actor_id role email ip detail"),
            filters=("event", "user_id"),
            roles=MANAGERS,
            group_by="event",
            fed_by=(
                "user.registered",
                "invite.accepted",
                "user.role_changed",
                "user.disabled",
                "user.password_changed",
                "user.login_blocked",
                "mfa.enabled",
                "mfa.disabled",
                "mfa.recovery_code_used",
                "mfa.challenge_failed",
            ),
        ),
        ReportType(
            name="webhook_outcomes",
            title="Webhook message outcomes",
            columns=_cols("time:datetime outcome endpoint_id message_id event_type attempts:integer detail"),
            filters=("outcome", "endpoint_id", "event_type"),
            roles=MANAGERS,
            group_by="outcome",
            fed_by=("webhook.message.failed", "webhook.endpoint.disabled"),
        ),
        ReportType(
            name="notification_deliveries",
            title="Notifications sent and failed",
            columns=_cols(
                "time:datetime status channel template category user_id attempts:integer error_class"
                " smtp_code:integer delivery_id"
            ),
            filters=("status", "channel", "template", "category", "user_id", "error_class"),
            roles=ALL_ROLES,
            group_by="status",
            fed_by=("notification.delivered", "notification.failed"),
        ),
        ReportType(
            name="workflow_runs",
            title="Workflow runs and their results",
            columns=_cols("time:datetime workflow_id run_id status duration_ms:integer error"),
            filters=("workflow_id", "status"),
            roles=ALL_ROLES,
            group_by="status",
            fed_by=("workflow.run.started", "workflow.run.completed", "workflow.run.failed"),
        ),
    )
}
"""Every report type by name."""

FORMATS: dict[str, tuple[str, str]] = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "ndjson": ("application/x-ndjson", "ndjson"),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    "pdf": ("application/pdf", "pdf"),
}
"""Format → (``Content-Type``, file extension)."""
