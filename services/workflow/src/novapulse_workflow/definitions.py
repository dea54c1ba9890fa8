"""Use cases of definitions: create and edit (every change a new immutable version), enable/disable,
delete, and the dry run. Raises domain errors; knows no HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from novapulse_runtime.bus import new_event_id
from novapulse_runtime.clock import now_ms, utcnow

from .constants import END, MAX_DEFINITIONS_PER_ORG, MAX_RUN_TRANSITIONS
from .engine import context_of
from .errors import DefinitionInvalid, DefinitionLimitReached, DefinitionNotFound
from .expressions import ExpressionError, evaluate, render, truthy
from .language import (
    ConditionStep,
    Definition,
    DelayStep,
    EmitStep,
    NotifyStep,
    ReportStep,
    WaitStep,
    check,
    following,
)
from .reporting import report_request
from .repository import DefinitionRecord, Repository, Run


@dataclass(frozen=True)
class VersionedDefinition:
    """A definition's state and the body of one of its versions."""

    record: DefinitionRecord
    version: int
    body: Definition


def sample_event(org_id: str, type_: str, data: dict[str, Any], subject: str | None = None) -> dict[str, Any]:
    """An event as expressions see it (``{id, type, source, time, org_id, subject, data}``) with a fresh id."""
    return {
        "id": new_event_id(),
        "type": type_,
        "source": "api",
        "time": utcnow().isoformat(),
        "org_id": org_id,
        "subject": subject,
        "data": data,
    }


class DefinitionService:
    """Definitions of an organisation. Every method takes the caller's organisation."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    @staticmethod
    def validate(defn: Definition) -> None:
        """:raises DefinitionInvalid: with ``errors`` naming the path of every fault (``language.check``)."""
        faults = check(defn)
        if faults:
            raise DefinitionInvalid("The definition has faults", errors=faults)

    async def create(self, org_id: str, user_id: str, defn: Definition) -> VersionedDefinition:
        """A new definition, version 1, enabled.

        :raises DefinitionInvalid: faults of the language.
        :raises DefinitionLimitReached: the organisation has ``MAX_DEFINITIONS_PER_ORG`` already."""
        self.validate(defn)
        if await self.repo.count_definitions(org_id) >= MAX_DEFINITIONS_PER_ORG:
            raise DefinitionLimitReached(f"An organisation keeps at most {MAX_DEFINITIONS_PER_ORG} definitions")
        body = defn.model_dump(mode="json", exclude_none=True)
        record = await self.repo.insert_definition(org_id, user_id, body, defn.trigger.type)
        return VersionedDefinition(record, 1, defn)

    async def update(self, org_id: str, user_id: str, def_id: str, defn: Definition) -> VersionedDefinition:
        """A new version made current; runs in flight stay on theirs.

        :raises DefinitionInvalid: faults of the language. :raises DefinitionNotFound: no such definition."""
        self.validate(defn)
        body = defn.model_dump(mode="json", exclude_none=True)
        for _ in range(3):  # another change made the same version first: build on the newer one
            record = await self.repo.get_definition(org_id, def_id)
            if record is None:
                raise DefinitionNotFound("No such definition")
            updated = await self.repo.add_version(org_id, def_id, user_id, body, defn.trigger.type, record.version)
            if updated is not None:
                return VersionedDefinition(updated, updated.version, defn)
        raise DefinitionNotFound("No such definition")

    async def get(self, org_id: str, def_id: str, version: int | None = None) -> VersionedDefinition:
        """The definition with its current version's body (or version ``version``).

        :raises DefinitionNotFound: no such definition or version."""
        record = await self.repo.get_definition(org_id, def_id)
        if record is None:
            raise DefinitionNotFound("No such definition")
        wanted = record.version if version is None else version
        body = await self.repo.get_version(org_id, def_id, wanted)
        if body is None:
            raise DefinitionNotFound("No such version")
        return VersionedDefinition(record, wanted, Definition.model_validate(body))

    async def listing(self, org_id: str, after: str | None, count: int) -> list[DefinitionRecord]:
        """Up to ``count`` definitions, newest first, after the id ``after``."""
        return await self.repo.list_definitions(org_id, after, count)

    async def set_enabled(self, org_id: str, def_id: str, enabled: bool) -> VersionedDefinition:
        """:raises DefinitionNotFound: no such definition."""
        if not await self.repo.set_enabled(org_id, def_id, enabled):
            raise DefinitionNotFound("No such definition")
        return await self.get(org_id, def_id)

    async def delete(self, org_id: str, def_id: str) -> None:
        """Delete (runs in flight finish on their version). :raises DefinitionNotFound: no such definition."""
        if not await self.repo.delete_definition(org_id, def_id):
            raise DefinitionNotFound("No such definition")

    async def dry_run(
        self, org_id: str, def_id: str, data: dict[str, Any], subject: str | None
    ) -> tuple[int, bool, list[dict[str, Any]]]:
        """The path a run would take for a trigger event with ``data``, with each step's rendered inputs, and
        nothing done: (version, filter passes, ``[{key, type, inputs, next, error}]``). Delays are taken as
        elapsed and waits as timed out with no event (``on_timeout``, else the next step).

        :raises DefinitionNotFound: no such definition."""
        current = await self.get(org_id, def_id)
        defn = current.body
        event = sample_event(org_id, defn.trigger.type, data, subject)
        passes = True
        if defn.trigger.filter is not None:
            try:
                passes = truthy(evaluate(defn.trigger.filter, {"event": event}))
            except ExpressionError:
                passes = False
        run = Run.from_doc(
            {
                "_id": "dry-run",
                "org_id": org_id,
                "definition_id": def_id,
                "version": current.version,
                "status": "pending",
                "trigger": event,
                "step": defn.steps[0].key,
                "created_ms": 0,
            }
        )
        return current.version, passes, simulate(defn, context_of(run, []))


def simulate(defn: Definition, ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """Walk ``defn`` from its first step over ``ctx`` without effects (see ``DefinitionService.dry_run``)."""
    index_of = {s.key: i for i, s in enumerate(defn.steps)}
    path: list[dict[str, Any]] = []
    key = defn.steps[0].key
    while key != END and len(path) < min(MAX_RUN_TRANSITIONS, 4 * len(defn.steps)):
        i = index_of[key]
        step = defn.steps[i]
        inputs: Any = None
        error = ""
        nxt = following(defn, i, step.next)
        output: Any = None
        try:
            if isinstance(step, NotifyStep):
                inputs = render(
                    {"template": step.template, "user_id": step.user_id, "role": step.role, "data": step.data}, ctx
                )
            elif isinstance(step, EmitStep):
                inputs = {"event_type": step.event_type, "data": render(step.data, ctx)}
                output = inputs
            elif isinstance(step, DelayStep):
                inputs = {"seconds": step.seconds} if step.seconds is not None else {"until": render(step.until, ctx)}
            elif isinstance(step, WaitStep):
                inputs = {"event_type": step.event_type, "match": step.match, "wait_seconds": step.wait_seconds}
                nxt = step.on_timeout or nxt
            elif isinstance(step, ReportStep):
                inputs = report_request(step, ctx, ctx["trigger"].get("org_id") or "", "", now_ms()).model_dump(
                    mode="json", exclude={"request_id"}
                )
            elif isinstance(step, ConditionStep):
                nxt = following(defn, i, step.default or step.next)
                for j, branch in enumerate(step.branches):
                    if truthy(evaluate(branch.when, ctx)):
                        nxt = branch.next
                        inputs = {"branch": j}
                        break
        except (ExpressionError, ValueError) as exc:
            error = str(exc) if not isinstance(exc, ValidationError) else exc.errors()[0]["msg"]
            nxt = step.catch.next if step.catch is not None else END
        path.append({"key": step.key, "type": step.type, "inputs": inputs, "next": nxt, "error": error})
        ctx = {**ctx, "steps": {**ctx["steps"], step.key: output}}
        key = nxt
    return path
