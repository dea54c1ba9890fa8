"""The definition language: what a workflow definition is (pydantic models, which drive parsing, 422s and
the OpenAPI document) and the rules a model alone cannot say (:func:`check`), each fault named by the JSON
path of the value at fault (``steps.2.next``), as the runtime names request faults.

A definition::

    {"name": "Welcome", "trigger": {"type": "user.registered", "filter": "event.data.role == 'owner'"},
     "steps": [
       {"key": "hello", "type": "notify", "template": "welcome", "user_id": "${trigger.data.user_id}"},
       {"key": "pause", "type": "delay", "seconds": 1},
       {"key": "big", "type": "condition",
        "branches": [{"when": "contains(trigger.data.email, '@example.com')", "next": "tell"}],
        "default": "end"},
       {"key": "tell", "type": "emit", "event_type": "customer.onboarded",
        "data": {"user": "${trigger.data.user_id}"}, "retry": {"max_attempts": 3}, "catch": {"next": "end"}}]}

Steps run in list order unless ``next`` (or a branch, ``catch``, ``on_timeout``) names another key; the key
``end`` ends the run. See the service README for every field.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from novapulse_runtime.catalog import CATALOG
from novapulse_runtime.errors import field_error

from .constants import (
    APP_EVENT_TYPE,
    APP_TRIGGER_TYPE,
    END,
    MAX_APP_EVENT_TYPE,
    MAX_DEFINITION_BYTES,
    MAX_REPORT_RANGE_SECONDS,
    MAX_RETRY_ATTEMPTS,
    MAX_RUN_SECONDS,
    MAX_STEPS,
    SERVICE_NAME,
    STEP_KEY,
)
from .expressions import ExpressionError, compile_expression, template_expressions

MANUAL = "manual"
"""The trigger type of a definition started only by the API's manual trigger."""


@cache
def _platform_domains() -> frozenset[str]:
    return frozenset(t.name.split(".")[0] for t in CATALOG.all_types())


def is_application_type(name: str) -> bool:
    """Whether ``name`` is an application event type (``APP_TRIGGER_TYPE``): lower-case dotted words, not a
    catalogue type and not under a platform domain, so ``user.registerd`` (a typo) is refused, not taken as
    an application's own type."""
    return (
        len(name) <= MAX_APP_EVENT_TYPE
        and re.fullmatch(APP_TRIGGER_TYPE, name) is not None
        and CATALOG.lookup(name) is None
        and name.split(".")[0] not in _platform_domains()
    )


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryPolicy(Strict):
    """How a failed attempt is retried: attempt ``n`` (from 1) waits
    ``min(initial_interval_seconds * backoff_rate^(n-1), max_interval_seconds)`` seconds, less a random
    share up to ``jitter`` of it (0: none; 1: "full jitter")."""

    max_attempts: int = Field(default=1, ge=1, le=MAX_RETRY_ATTEMPTS)
    initial_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    backoff_rate: float = Field(default=2.0, ge=1, le=10)
    max_interval_seconds: float = Field(default=60.0, gt=0, le=86_400)
    jitter: float = Field(default=0.0, ge=0, le=1)


class Catch(Strict):
    """Where a step that failed past its retries goes (a step key or ``end``); without ``catch`` the run
    fails."""

    next: str = Field(min_length=1, max_length=48)


class StepBase(Strict):
    key: str = Field(pattern=STEP_KEY, description="Stable key of the step (journal, rerun, branches)")
    next: str | None = Field(
        default=None, max_length=48, description="Step key to go to next (default: the next in the list)"
    )
    timeout_seconds: float | None = Field(default=None, gt=0, le=MAX_RUN_SECONDS)
    retry: RetryPolicy | None = None
    catch: Catch | None = None


class NotifyStep(StepBase):
    """Emit ``notification.requested`` (the notification service mails it) to one user or a role."""

    type: Literal["notify"]
    template: str = Field(min_length=1, max_length=100)
    user_id: str | None = Field(default=None, max_length=600)
    role: Literal["owner", "admin", "member"] | None = None
    data: dict[str, Any] = {}


class EmitStep(StepBase):
    """Emit the organisation's own event ``event_type`` with ``data`` (as ``workflow.emitted``)."""

    type: Literal["emit"]
    event_type: str = Field(pattern=APP_EVENT_TYPE)
    data: dict[str, Any] = {}


class DelayStep(StepBase):
    """Wait ``seconds``, or until ``until`` (RFC 3339, or a template giving RFC 3339 or epoch ms)."""

    type: Literal["delay"]
    seconds: float | None = Field(default=None, gt=0, le=MAX_RUN_SECONDS)
    until: str | None = Field(default=None, max_length=600)


class WaitStep(StepBase):
    """Wait for an event of ``event_type`` of the organisation for which ``match`` is true, received since the
    run started (so one that came before the wait began counts), at most ``wait_seconds``; then go to
    ``on_timeout`` (or fail the step)."""

    type: Literal["wait_for_event"]
    event_type: str = Field(min_length=1, max_length=100)
    match: str | None = None
    wait_seconds: float = Field(gt=0, le=MAX_RUN_SECONDS)
    on_timeout: str | None = Field(default=None, max_length=48)


class Branch(Strict):
    when: str
    next: str = Field(min_length=1, max_length=48)


class ConditionStep(StepBase):
    """Go to the ``next`` of the first branch whose ``when`` is true, else to ``default`` (else the next
    step in the list)."""

    type: Literal["condition"]
    branches: list[Branch] = Field(min_length=1, max_length=20)
    default: str | None = Field(default=None, max_length=48)


class ReportStep(StepBase):
    """Ask the report service for a report (``report.requested``, whose ``request_id`` is the step's effect
    id) and wait for its answer: ``report.completed`` carrying that ``request_id`` completes the step with
    ``{report_id, row_count, sha256, expires_at, request_id}``; ``report.failed`` fails it (``retry`` and
    ``catch`` apply). ``timeout_seconds`` bounds the wait (default ``REPORT_TIMEOUT_SECONDS``).

    The period is ``start``/``end`` (templates giving RFC 3339 times with an offset; ``start`` included,
    ``end`` excluded) or ``last_seconds`` (the period ending at the attempt). ``requested_by`` (a template
    giving a user id) is the user the report service files it under."""

    type: Literal["report"]
    report_type: str = Field(min_length=1, max_length=64, description="A report type of the report service")
    format: Literal["csv", "ndjson", "xlsx", "pdf"] = "csv"
    requested_by: str = Field(min_length=1, max_length=600)
    start: str | None = Field(default=None, max_length=600)
    end: str | None = Field(default=None, max_length=600)
    last_seconds: float | None = Field(default=None, gt=0, le=MAX_REPORT_RANGE_SECONDS)
    time_zone: str = Field(default="UTC", min_length=1, max_length=64)
    filters: dict[str, str] = Field(default={}, max_length=20)
    csv_bom: bool = False
    neutralize_formulas: bool = True


Step = Annotated[NotifyStep | EmitStep | DelayStep | WaitStep | ConditionStep | ReportStep, Field(discriminator="type")]


class Trigger(Strict):
    """The event type that starts a run (a catalogue type, an application event type posted to
    ``POST /events``, or ``manual``) and an optional ``filter`` expression over ``{event}``."""

    type: str = Field(min_length=1, max_length=100)
    filter: str | None = None


class CancelOn(Strict):
    """Cancel a run when an event of ``event_type`` of the organisation arrives after the run started and
    ``match`` (an expression over ``{event, trigger}``) is true."""

    event_type: str = Field(min_length=1, max_length=100)
    match: str | None = None


class Idempotency(Strict):
    """At most one run per value of ``key`` (an expression over ``{event}``) within ``window_seconds``; a
    trigger whose key is held starts nothing. A ``null`` key applies no limit."""

    key: str
    window_seconds: float = Field(gt=0, le=MAX_RUN_SECONDS)


class Debounce(Strict):
    """Start a run only once ``seconds`` passed without another trigger of the same ``key``: a newer trigger
    replaces the run waiting to start (it is cancelled as ``debounced``)."""

    key: str
    seconds: float = Field(gt=0, le=86_400)


class Concurrency(Strict):
    """At most ``limit`` runs of the definition with the same ``key`` run at once; the others wait (``pending``)
    until a slot frees."""

    key: str
    limit: int = Field(ge=1, le=100)


class Flow(Strict):
    """Flow control of a definition's runs (keys are expressions over ``{event}``, the trigger event)."""

    idempotency: Idempotency | None = None
    debounce: Debounce | None = None
    concurrency: Concurrency | None = None


class Definition(Strict):
    """A workflow definition (one version of it)."""

    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=1000)
    trigger: Trigger
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    cancel_on: list[CancelOn] = Field(default=[], max_length=10)
    flow: Flow | None = None


def _expr(faults: list[dict[str, str]], field: str, text: str | None) -> None:
    if text is None:
        return
    try:
        compile_expression(text)
    except ExpressionError as exc:
        faults.append(field_error(field, str(exc), "expression"))


def _templates(faults: list[dict[str, str]], field: str, value: Any) -> None:
    for path, text in template_expressions(value):
        _expr(faults, f"{field}.{path}" if path else field, text)


def check(defn: Definition) -> list[dict[str, str]]:
    """Every fault of ``defn`` the models cannot see, as ``[{location, field, message, type}]`` (empty when
    none). Kinds (``type``): ``too_large``, ``unknown_event_type``, ``reserved_event_type``,
    ``duplicate_key``, ``reserved_key``, ``unknown_step``, ``expression``, ``missing``, ``conflict``."""
    faults: list[dict[str, str]] = []
    size = len(json.dumps(defn.model_dump(mode="json", exclude_none=True), separators=(",", ":")).encode())
    if size > MAX_DEFINITION_BYTES:
        faults.append(field_error("", f"definition is {size} bytes; the limit is {MAX_DEFINITION_BYTES}", "too_large"))
    ttype = defn.trigger.type
    et = CATALOG.lookup(ttype)
    if ttype != MANUAL and not is_application_type(ttype) and (et is None or et.source == SERVICE_NAME):
        faults.append(
            field_error(
                "trigger.type",
                f"{ttype[:100]!r} is neither a catalogue event type of another service nor an application "
                "event type (lower-case dotted words outside the platform's domains)",
                "unknown_event_type",
            )
        )
    _expr(faults, "trigger.filter", defn.trigger.filter)
    if defn.flow is not None:
        for name in ("idempotency", "debounce", "concurrency"):
            control = getattr(defn.flow, name)
            if control is not None:
                _expr(faults, f"flow.{name}.key", control.key)
    for i, cancel in enumerate(defn.cancel_on):
        if CATALOG.lookup(cancel.event_type) is None:
            faults.append(
                field_error(
                    f"cancel_on.{i}.event_type",
                    f"{cancel.event_type[:100]!r} is not a catalogue event type",
                    "unknown_event_type",
                )
            )
        _expr(faults, f"cancel_on.{i}.match", cancel.match)
    keys: dict[str, int] = {}
    for i, step in enumerate(defn.steps):
        if step.key == END:
            faults.append(field_error(f"steps.{i}.key", f"{END!r} is reserved: it ends the run", "reserved_key"))
        elif step.key in keys:
            faults.append(
                field_error(f"steps.{i}.key", f"key {step.key!r} is used by steps.{keys[step.key]}", "duplicate_key")
            )
        else:
            keys[step.key] = i

    def target(field: str, key: str | None) -> None:
        if key is not None and key != END and key not in keys:
            faults.append(field_error(field, f"no step has the key {key[:48]!r}", "unknown_step"))

    for i, step in enumerate(defn.steps):
        at = f"steps.{i}"
        target(f"{at}.next", step.next)
        if step.catch is not None:
            target(f"{at}.catch.next", step.catch.next)
        if isinstance(step, NotifyStep):
            if (step.user_id is None) == (step.role is None):
                faults.append(field_error(f"{at}.user_id", "give exactly one of user_id and role", "conflict"))
            _templates(faults, f"{at}.user_id", step.user_id)
            _templates(faults, f"{at}.data", step.data)
        elif isinstance(step, EmitStep):
            if CATALOG.lookup(step.event_type) is not None:
                faults.append(
                    field_error(
                        f"{at}.event_type", f"{step.event_type} is a platform event type", "reserved_event_type"
                    )
                )
            _templates(faults, f"{at}.data", step.data)
        elif isinstance(step, DelayStep):
            if (step.seconds is None) == (step.until is None):
                faults.append(field_error(f"{at}.seconds", "give exactly one of seconds and until", "conflict"))
            _templates(faults, f"{at}.until", step.until)
        elif isinstance(step, WaitStep):
            if CATALOG.lookup(step.event_type) is None:
                faults.append(
                    field_error(
                        f"{at}.event_type",
                        f"{step.event_type[:100]!r} is not a catalogue event type",
                        "unknown_event_type",
                    )
                )
            _expr(faults, f"{at}.match", step.match)
            target(f"{at}.on_timeout", step.on_timeout)
        elif isinstance(step, ConditionStep):
            for j, branch in enumerate(step.branches):
                _expr(faults, f"{at}.branches.{j}.when", branch.when)
                target(f"{at}.branches.{j}.next", branch.next)
            target(f"{at}.default", step.default)
        elif isinstance(step, ReportStep):
            period = step.start is not None or step.end is not None
            if period == (step.last_seconds is not None) or (period and (step.start is None or step.end is None)):
                faults.append(
                    field_error(f"{at}.last_seconds", "give either start and end, or last_seconds", "conflict")
                )
            _templates(faults, f"{at}.requested_by", step.requested_by)
            _templates(faults, f"{at}.start", step.start)
            _templates(faults, f"{at}.end", step.end)
            _templates(faults, f"{at}.filters", step.filters)
    return faults


def listened_types(defn: Definition) -> list[str]:
    """The event types the definition's waits and ``cancel_on`` listen for (a run keeps the events of the
    waits' types it receives)."""
    return sorted(
        {s.event_type for s in defn.steps if isinstance(s, WaitStep)} | {c.event_type for c in defn.cancel_on}
    )


def following(defn: Definition, index: int, explicit: str | None) -> str:
    """The key after ``steps[index]``: ``explicit`` when given, else the next step in the list, else ``end``."""
    if explicit is not None:
        return explicit
    return defn.steps[index + 1].key if index + 1 < len(defn.steps) else END
