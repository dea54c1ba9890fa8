"""The data sets: this service's own projections of other services' events (never their databases).

Each consumed event becomes one row of one data set (:data:`PROJECTIONS`: event type → row builder). The
row's time is the event's ``time``; its id is the event id, so at-least-once delivery stores it once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from novapulse_runtime.bus import Event
from novapulse_runtime.catalog import auth as A
from novapulse_runtime.catalog import notification as N
from novapulse_runtime.catalog import webhook as W
from novapulse_runtime.catalog import workflow as F
from novapulse_runtime.clock import now_ms, to_ms

from .repository import Fact, Repository

RowBuilder = Callable[[Any], tuple[str, dict[str, Any]]]
"""Event data → (data set, column values)."""


def _auth(event: str, user_id: str, actor_id: str, **more: Any) -> tuple[str, dict[str, Any]]:
    return "auth_activity", {"event": event, "user_id": user_id, "actor_id": actor_id, **more}


def _run(d: Any, status: str, error: str = "") -> tuple[str, dict[str, Any]]:
    """A ``workflow_runs`` row: ``workflow_id`` is the definition's id and version (``wf_1@3``)."""
    values = {"workflow_id": f"{d.definition_id}@{d.version}", "run_id": d.run_id, "status": status}
    return "workflow_runs", values | ({"error": error} if error else {})


def _delivery(d: Any, status: str, **more: Any) -> tuple[str, dict[str, Any]]:
    """A ``notification_deliveries`` row: ids and classes only (the events carry no address or content);
    ``user_id`` is empty for a recipient who is not a user (an invitation)."""
    values = {
        "status": status,
        "channel": d.channel,
        "template": d.template,
        "category": d.category,
        "user_id": d.user_id,
        "attempts": d.attempts,
        "delivery_id": d.delivery_id,
    }
    return "notification_deliveries", values | {k: v for k, v in more.items() if v is not None}


PROJECTIONS: dict[str, RowBuilder] = {
    "user.registered": lambda d: _auth("user.registered", d.user_id, d.user_id, role=d.role, email=d.email),
    "invite.accepted": lambda d: _auth("invite.accepted", d.user_id, d.invited_by, role=d.role, email=d.email),
    "user.role_changed": lambda d: _auth("user.role_changed", d.user_id, d.changed_by, role=d.role),
    "user.disabled": lambda d: _auth("user.disabled", d.user_id, d.disabled_by),
    "user.password_changed": lambda d: _auth("user.password_changed", d.user_id, d.user_id),
    "user.login_blocked": lambda d: _auth(
        "user.login_blocked",
        d.user_id,
        "",
        ip=d.ip,
        detail=f"{d.scope} blocked after {d.failures} failures for {d.retry_after_s} s",
    ),
    "mfa.enabled": lambda d: _auth("mfa.enabled", d.user_id, d.user_id),
    "mfa.disabled": lambda d: _auth("mfa.disabled", d.user_id, d.by),
    "mfa.recovery_code_used": lambda d: _auth(
        "mfa.recovery_code_used", d.user_id, d.user_id, detail=f"{d.remaining} recovery codes left"
    ),
    "mfa.challenge_failed": lambda d: _auth(
        "mfa.challenge_failed", d.user_id, d.user_id, ip=d.ip, detail=f"attempt {d.attempts}"
    ),
    "webhook.message.failed": lambda d: (
        "webhook_outcomes",
        {
            "outcome": "failed",
            "endpoint_id": d.endpoint_id,
            "message_id": d.message_id,
            "event_type": d.event_type,
            "attempts": d.attempts,
            "detail": d.last_error,
        },
    ),
    "webhook.endpoint.disabled": lambda d: (
        "webhook_outcomes",
        {"outcome": "endpoint_disabled", "endpoint_id": d.endpoint_id, "detail": f"{d.reason} ({d.url})"},
    ),
    "notification.delivered": lambda d: _delivery(d, "sent"),
    "notification.failed": lambda d: _delivery(d, "failed", error_class=d.error_class, smtp_code=d.smtp_code),
    "workflow.run.started": lambda d: _run(d, "started"),
    "workflow.run.completed": lambda d: _run(d, "completed"),
    "workflow.run.failed": lambda d: _run(
        d, "cancelled" if d.cancelled else "failed", error="" if d.cancelled else f"step {d.step}: {d.error}"
    ),
}
"""Event type → the row it adds. The models are the catalogue's (``catalog/auth.py``, ``catalog/notification.py``,
``catalog/webhook.py``, ``catalog/workflow.py``)."""

RUN_STARTED = "workflow.run.started"
RUN_ENDS = ("workflow.run.completed", "workflow.run.failed")
"""A run's end row gets ``duration_ms``: its time minus the time of the run's ``workflow.run.started``,
remembered by the report service (:meth:`~.repository.Repository.remember_run_start`) since the end events
do not carry it; empty when the start was never seen (a run started before the ``report`` group existed)."""

_MODELS = {
    **{et.name: et.model for et in A.EVENTS},
    **{et.name: et.model for et in N.EVENTS},
    **{et.name: et.model for et in W.EVENTS},
    **{et.name: et.model for et in F.EVENTS},
}


def fact_of(event: Event) -> Fact:
    """The row ``event`` adds to its data set.

    :raises KeyError: ``event.type`` is not in :data:`PROJECTIONS`.
    """
    build = PROJECTIONS[event.type]
    data = event.data_as(_MODELS[event.type])
    dataset, values = build(data)
    org_id = event.org_id or str(getattr(data, "org_id", ""))
    return Fact(event.id, dataset, org_id, to_ms(event.time), values)


class DataSets:
    """Feeds the data sets from events."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def record(self, event: Event) -> bool:
        """Store the row of ``event`` (idempotent). Returns whether it was new. A run's start is also
        remembered until its end, whose row then gets the run's ``duration_ms``."""
        fact = fact_of(event)
        run = (fact.org_id, str(fact.values.get("run_id", "")))
        if event.type == RUN_STARTED:
            await self.repo.remember_run_start(*run, fact.at_ms)
        elif event.type in RUN_ENDS:
            started = await self.repo.run_start(*run)
            if started is not None:
                fact = dataclasses.replace(fact, values=fact.values | {"duration_ms": max(0, fact.at_ms - started)})
        new = await self.repo.add_fact(fact, now_ms())
        if event.type in RUN_ENDS:
            await self.repo.forget_run_start(*run)
        return new
