"""Use cases of runs: manual trigger, list, timeline, cancel, rerun from a step. Raises domain errors; knows
no HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .definitions import DefinitionService, sample_event
from .engine import effect_id
from .errors import DefinitionDisabled, DuplicateTrigger, RunFinished, RunNotFound, UnknownStep
from .language import Definition, listened_types
from .ports import Effects
from .repository import Attempt, Repository, Run, RunFilter
from .starting import start_run
from .tracing import run_span


@dataclass(frozen=True)
class Rerun:
    """A rerun: the new run, the version it runs, the steps whose outputs it reuses, and the step keys that
    differ between the original run's version and the one chosen (added, removed or changed)."""

    run: Run
    version: int
    reused: list[str]
    changed_steps: list[str]


def changed_steps(old: Definition, new: Definition) -> list[str]:
    """Step keys added, removed or changed from ``old`` to ``new``, sorted."""
    before = {s.key: s.model_dump(mode="json") for s in old.steps}
    after = {s.key: s.model_dump(mode="json") for s in new.steps}
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


async def cancel_run(repo: Repository, effects: Effects, run: Run, reason: str) -> Run | None:
    """Mark ``run`` cancelled and publish its ``workflow.run.failed`` (``cancelled``; the run's one end
    event id); ``None`` when it had ended already."""
    cancelled = await repo.cancel_run(run.org_id, run.id, reason)
    if cancelled is None:
        return None
    await effects.publish(
        "workflow.run.failed",
        {
            "org_id": run.org_id,
            "run_id": run.id,
            "definition_id": run.definition_id,
            "version": run.version,
            "step": cancelled.step,
            "error": reason,
            "cancelled": True,
        },
        org_id=run.org_id,
        subject=run.id,
        event_id=effect_id(run.id, run.created_ms, "$end", 0),
    )
    return cancelled


class RunService:
    """Runs of an organisation. Every method takes the caller's organisation."""

    def __init__(self, repo: Repository, definitions: DefinitionService, effects: Effects) -> None:
        self.repo = repo
        self.definitions = definitions
        self.effects = effects

    async def trigger(self, org_id: str, def_id: str, data: dict[str, Any], subject: str | None) -> Run:
        """Start a run of the current version now, its trigger event built from ``data`` (a fresh id).

        :raises DefinitionNotFound: no such definition. :raises DefinitionDisabled: it is disabled.
        :raises DuplicateTrigger: the definition's idempotency key is held within its window."""
        current = await self.definitions.get(org_id, def_id)
        if not current.record.enabled:
            raise DefinitionDisabled("The definition is disabled")
        event = sample_event(org_id, current.body.trigger.type, data, subject)
        run = await start_run(self.repo, def_id, current.version, current.body, event)
        if run is None:
            raise DuplicateTrigger("A run with the same idempotency key started within its window")
        return run

    async def listing(self, org_id: str, filters: RunFilter, after: str | None, count: int) -> list[Run]:
        """Up to ``count`` runs, newest first, after the id ``after``."""
        return await self.repo.list_runs(org_id, filters, after, count)

    async def get(self, org_id: str, run_id: str) -> tuple[Run, list[Attempt]]:
        """A run and its timeline (every attempt in order). :raises RunNotFound: no such run."""
        run = await self.repo.get_run(org_id, run_id)
        if run is None:
            raise RunNotFound("No such run")
        return run, await self.repo.journal_of(run_id)

    async def cancel(self, org_id: str, run_id: str) -> Run:
        """Cancel an unfinished run: the worker holding it stops at its next write, and a
        ``workflow.run.failed`` with ``cancelled`` is published.

        :raises RunNotFound: no such run. :raises RunFinished: the run has ended already."""
        run = await self.repo.get_run(org_id, run_id)
        if run is None:
            raise RunNotFound("No such run")
        cancelled = await cancel_run(self.repo, self.effects, run, "cancelled")
        if cancelled is None:
            raise RunFinished(f"The run has ended ({run.status})")
        return cancelled

    async def rerun(self, org_id: str, run_id: str, from_step: str, latest: bool) -> Rerun:
        """A new run of the original's trigger that starts at ``from_step`` and reuses the journaled outputs
        of the steps the original completed before it first reached that step; on the original's version,
        or the definition's current one with ``latest``.

        :raises RunNotFound: no such run. :raises UnknownStep: the chosen version has no such step.
        :raises DefinitionNotFound: the definition was deleted (``latest``)."""
        original, attempts = await self.get(org_id, run_id)
        pinned = await self.definitions.get(org_id, original.definition_id, original.version)
        chosen = await self.definitions.get(org_id, original.definition_id) if latest else pinned
        if from_step not in {s.key for s in chosen.body.steps}:
            raise UnknownStep(f"Version {chosen.version} has no step {from_step!r}")
        reuse: dict[str, Attempt] = {}
        for a in attempts:
            if a.key == from_step:
                break
            if a.status in ("completed", "reused"):
                reuse[a.key] = a
        with run_span(org_id, original.definition_id, chosen.version) as (span, traceparent):
            run = await self.repo.insert_run(
                org_id,
                original.definition_id,
                chosen.version,
                original.trigger,
                from_step,
                listened_types(chosen.body),
                rerun_of=original.id,
                gen=len(reuse),
                held=True,
                traceparent=traceparent,
            )
            span.set_attribute("workflow.run_id", run.id if run is not None else "")
        assert run is not None  # a rerun's trigger key holds its own run id
        for gen, a in enumerate(reuse.values()):
            await self.repo.journal_attempt(
                run, a.key, a.type, "reused", output=a.output, next_key=a.next, gen=gen, attempt=1
            )
        await self.repo.release_run(run.id)
        return Rerun(run, chosen.version, list(reuse), changed_steps(pinned.body, chosen.body))
