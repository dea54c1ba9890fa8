"""HTTP request and response models of the workflow service (they drive parsing, 422s and OpenAPI). The
definition itself is :class:`~.language.Definition`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from novapulse_runtime.clock import from_ms
from novapulse_runtime.paging import PageQuery

from .constants import APP_EVENT_ID, APP_TRIGGER_TYPE, MAX_APP_EVENT_TYPE, STEP_KEY
from .definitions import VersionedDefinition
from .language import Definition
from .repository import Attempt, DefinitionRecord, Run
from .runs import Rerun


class DefinitionSummary(BaseModel):
    id: str
    name: str
    version: int = Field(description="The current version")
    enabled: bool
    trigger_type: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, r: DefinitionRecord) -> DefinitionSummary:
        return cls(
            id=r.id,
            name=r.name,
            version=r.version,
            enabled=r.enabled,
            trigger_type=r.trigger_type,
            created_at=from_ms(r.created_ms),
            updated_at=from_ms(r.updated_ms),
        )


class DefinitionOut(DefinitionSummary):
    shown_version: int = Field(description="The version whose body is in `definition`")
    definition: Definition

    @classmethod
    def of_versioned(cls, v: VersionedDefinition) -> DefinitionOut:
        base = DefinitionSummary.of(v.record).model_dump()
        return cls(**base, shown_version=v.version, definition=v.body)


class DefinitionList(BaseModel):
    items: list[DefinitionSummary]
    next_cursor: str | None = Field(description="Cursor of the next page; null on the last page")


class TriggerIn(BaseModel):
    """A manual trigger or a dry run: the trigger event's ``data`` (and ``subject``)."""

    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any] = {}
    subject: str | None = Field(default=None, max_length=200)


class EventIn(BaseModel):
    """An application event (``POST /events``): the organisation's own ``type`` (lower-case dotted words,
    neither a platform type nor under a platform domain), ``data`` (a JSON object, at most 64 000 bytes),
    ``subject``, and optionally the caller's event ``id`` (else the ``Idempotency-Key`` header names it)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=MAX_APP_EVENT_TYPE, pattern=APP_TRIGGER_TYPE, examples=["invoice.paid"])
    data: dict[str, Any] = {}
    subject: str | None = Field(default=None, max_length=200)
    id: str | None = Field(default=None, pattern=APP_EVENT_ID, description="The event's id (idempotency)")


class EventAccepted(BaseModel):
    """What a posted event did: its id, the runs it started (the first ones, if the same event came before:
    ``duplicate`` true)."""

    event_id: str
    runs: list[str]
    duplicate: bool


class DryRunStep(BaseModel):
    key: str
    type: str
    inputs: Any
    next: str
    error: str


class DryRunOut(BaseModel):
    version: int
    filter_passes: bool = Field(description="Whether the trigger filter holds for the sample event")
    path: list[DryRunStep]


class RunOut(BaseModel):
    id: str
    definition_id: str
    version: int
    status: str
    step: str = Field(description="The current (or last) step key")
    attempt: int
    trigger_event_id: str
    error: str
    rerun_of: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, r: Run) -> RunOut:
        return cls(
            id=r.id,
            definition_id=r.definition_id,
            version=r.version,
            status=r.status,
            step=r.step,
            attempt=r.attempt,
            trigger_event_id=r.trigger_event_id,
            error=r.error,
            rerun_of=r.rerun_of or None,
            created_at=from_ms(r.created_ms),
            updated_at=from_ms(r.updated_ms),
            finished_at=from_ms(r.finished_ms) if r.finished_ms else None,
        )


class AttemptOut(BaseModel):
    key: str
    type: str
    attempt: int
    generation: int
    status: Literal["completed", "failed", "reused"] | str
    output: Any
    next: str
    error: str
    effect_id: str | None
    started_at: datetime
    finished_at: datetime
    duration_ms: int

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        return cls(
            key=a.key,
            type=a.type,
            attempt=a.attempt,
            generation=a.gen,
            status=a.status,
            output=a.output,
            next=a.next,
            error=a.error,
            effect_id=a.effect_id or None,
            started_at=from_ms(a.started_ms),
            finished_at=from_ms(a.finished_ms),
            duration_ms=max(0, a.finished_ms - a.started_ms),
        )


class RunDetail(RunOut):
    trigger: dict[str, Any]
    timeline: list[AttemptOut]


class RunList(BaseModel):
    items: list[RunOut]
    next_cursor: str | None = Field(description="Cursor of the next page; null on the last page")


class RunQuery(PageQuery):
    """Filters of the runs list."""

    definition_id: str | None = Field(default=None, pattern=r"^wd_[0-9a-f]{32}$")
    status: Literal["pending", "running", "waiting", "completed", "failed", "cancelled"] | None = None
    trigger_event_id: str | None = Field(default=None, max_length=128)
    since: datetime | None = None
    until: datetime | None = None


class RerunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_step: str = Field(pattern=STEP_KEY)
    version: Literal["pinned", "latest"] = "pinned"


class RerunOut(BaseModel):
    run: RunOut
    version: int
    reused_steps: list[str] = Field(description="Steps whose journaled outputs the new run reuses")
    changed_steps: list[str] = Field(description="Step keys that differ between the original's version and this one")

    @classmethod
    def of(cls, r: Rerun) -> RerunOut:
        return cls(run=RunOut.of(r.run), version=r.version, reused_steps=r.reused, changed_steps=r.changed_steps)
