"""The step engine: advances a run whose lease this worker holds, step by step, durably.

Every write is fenced by the lease (``Repository.update_held``): a worker that lost its lease (it stalled
and another took the run over) or whose run was cancelled stops at its next write. The order of each step
is *effect, then journal, then transition*; after a crash the next holder finds the run on the same step and
generation, so a redone effect carries the same event id (:func:`effect_id`) and consumers dedupe it, and a
journaled attempt is never redone. Delays and waits are deadlines in the run document (``timer_ms``), so
they survive restarts of every process; the worker's claim picks them up when due.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from novapulse_runtime.catalog.workflow import Emitted, NotificationRequested
from novapulse_runtime.clock import now_ms

from .constants import (
    CONCURRENCY_RETRY_MS,
    END,
    MAX_RECEIVED_PER_RUN,
    MAX_RUN_TRANSITIONS,
    MAX_STEP_OUTPUT_BYTES,
    REPORT_TIMEOUT_SECONDS,
    REPORT_WAIT,
)
from .expressions import ExpressionError, evaluate, json_size, render, truthy
from .language import (
    ConditionStep,
    Definition,
    DelayStep,
    EmitStep,
    NotifyStep,
    ReportStep,
    RetryPolicy,
    Step,
    WaitStep,
    following,
)
from .ports import Effects, NoObserver, Observer, Publication
from .reporting import ReportFailedError, report_output, report_request
from .repository import ENDED, Attempt, Repository, Run
from .tracing import TRACER, in_run_trace

log = logging.getLogger(__name__)

__all__ = ["MAX_RECEIVED_PER_RUN", "Engine", "backoff_seconds", "context_of", "effect_id"]


def effect_id(run_id: str, created_ms: int, key: str, gen: int) -> str:
    """The event id of the effect of attempt generation ``gen`` of step ``key`` of a run: a UUIDv7-shaped id
    (RFC 9562 layout, version 7) whose time field is the run's creation (epoch ms) — so the outbox relays it
    near the run's other events — and whose random fields are SHA-256 of ``run id | key | gen``. The same
    inputs always give the same id; the run lifecycle events use the keys ``$started`` and ``$end``."""
    digest = int.from_bytes(hashlib.sha256(f"{run_id}|{key}|{gen}".encode()).digest()[:10], "big")
    rand_a = digest >> 68 & 0xFFF
    rand_b = digest & ((1 << 62) - 1)
    value = (created_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def backoff_seconds(policy: RetryPolicy, attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds before attempt ``attempt + 1`` after attempt ``attempt`` (from 1) failed:
    ``min(initial * rate^(attempt-1), max)``, less a random share up to ``jitter`` of it (AWS Step Functions'
    ``IntervalSeconds``/``BackoffRate``/``MaxDelaySeconds``/``JitterStrategy`` semantics)."""
    interval = min(policy.initial_interval_seconds * policy.backoff_rate ** (attempt - 1), policy.max_interval_seconds)
    return interval - interval * policy.jitter * rng()


def context_of(run: Run, attempts: list[Attempt]) -> dict[str, Any]:
    """The data expressions see: ``trigger`` (the trigger event: ``id``, ``type``, ``source``, ``time``,
    ``org_id``, ``subject``, ``data``), ``steps`` (each step key → the output of its last completed attempt)
    and ``run`` (``id``, ``definition_id``, ``version``, ``attempt``)."""
    outputs: dict[str, Any] = {}
    for a in attempts:
        if a.status in ("completed", "reused"):
            outputs[a.key] = a.output
    return {
        "trigger": run.trigger,
        "steps": outputs,
        "run": {"id": run.id, "definition_id": run.definition_id, "version": run.version, "attempt": run.attempt},
    }


@dataclass(frozen=True)
class Done:
    output: Any
    next: str


EFFECT_STEPS = ("notify", "emit", "report")
"""Step types whose attempt publishes an event (its id is the attempt's effect id)."""
PURE_STEPS = ("condition", "delay")
"""Step types whose attempt has no effect and reads nothing but the run: redone after a crash they give
the same outcome, so their journal entries and transitions are written with the run's next write."""


@dataclass
class _Unwritten:
    """What one pass over a run holds back for its next write (``Engine._write``): lifecycle events, journal
    documents of attempts, and run changes. Effects are never held back; before every attempt that is not
    pure (``PURE_STEPS``) everything held is written, so the order *effect, journal, transition* stands."""

    events: list[Publication] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sleep:
    """Park the run until ``until_ms``; ``waiting_for``: the event type (or ``report``) that wakes it sooner;
    ``seen``: how many such events the attempt saw (more after the write means one came meanwhile);
    ``report_request``: the request id whose answer wakes it."""

    until_ms: int
    waiting_for: str = ""
    seen: int = 0
    report_request: str = ""


@dataclass(frozen=True)
class Failed:
    error: str


Outcome = Done | Sleep | Failed


class StepError(Exception):
    """A step attempt failed (bad rendered input, an expression that failed on its data, a timeout)."""


def _parse_until(value: Any) -> int:
    if isinstance(value, bool):
        raise StepError("until is not a time")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise StepError("until is not an RFC 3339 time") from None
        if moment.tzinfo is None:
            raise StepError("until has no UTC offset")
        return int(moment.timestamp() * 1000)
    raise StepError("until is not a time")


class Engine:
    """Advances claimed runs. ``owner`` names this worker in leases; ``lease_ms`` is renewed at every
    transition; ``load`` gives the definition of a (definition id, version)."""

    def __init__(
        self,
        repo: Repository,
        effects: Effects,
        owner: str,
        lease_ms: int,
        *,
        rng: Callable[[], float] = random.random,
        observer: Observer | None = None,
    ) -> None:
        self.repo = repo
        self.effects = effects
        self.observer: Observer = observer or NoObserver()
        self.owner = owner
        self.lease_ms = lease_ms
        self.rng = rng
        self._definitions: dict[tuple[str, int], Definition] = {}
        self._unwritten: dict[str, _Unwritten] = {}

    async def definition(self, run: Run) -> Definition | None:
        """The pinned version of ``run`` (cached: versions are immutable)."""
        key = (run.definition_id, run.version)
        if key not in self._definitions:
            body = await self.repo.get_version(run.org_id, run.definition_id, run.version)
            if body is None:
                return None
            self._definitions[key] = Definition.model_validate(body)
        return self._definitions[key]

    async def _write(self, run: Run, changes: dict[str, Any]) -> bool:
        """Write what the pass held back — its events (one outbox insert), its journal entries (one insert)
        and its run changes, merged with ``changes`` into one fenced update — in that order. False when the
        lease or the run is gone. With no changes at all nothing is updated (True)."""
        held = self._unwritten.get(run.id)
        if held is not None:
            if held.events:
                await self.effects.publish_many(held.events)
                held.events = []
            if held.journal:
                await self.repo.insert_attempts(held.journal)
                held.journal = []
            changes = {**held.changes, **changes}
            held.changes = {}
        if not changes:
            return True
        if run.started:
            changes = {**changes, "started": True}
        return await self.repo.update_held(run.id, self.owner, changes)

    def _hold(self, run: Run) -> _Unwritten:
        return self._unwritten.setdefault(run.id, _Unwritten())

    async def execute(self, run: Run) -> None:
        """Advance ``run`` (claimed by this worker) until it sleeps, finishes, or the lease is lost. The lease
        is renewed every third of its length meanwhile, so a long step attempt keeps it."""
        renewer = asyncio.create_task(self._renew(run.id), name=f"lease-{run.id}")
        self._unwritten[run.id] = _Unwritten()
        try:
            with in_run_trace(run.traceparent):
                await self._execute(run)
        finally:
            self._unwritten.pop(run.id, None)
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)

    async def _renew(self, run_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                if not await self.repo.renew_lease(run_id, self.owner, self.lease_ms):
                    return
            except Exception:  # the next renewal (or the lease's end) settles it
                log.warning("renewing a run lease failed", extra={"run": run_id})

    async def _execute(self, run: Run) -> None:
        defn = await self.definition(run)
        if defn is None:
            await self.finish(run, "failed", "definition version is missing")
            return
        if (
            not run.started
            and run.concurrency_key
            and not await self.repo.take_slot(run.concurrency_key, run.concurrency_limit, run.id)
        ):
            # every slot of the key is taken: look again soon, holding no lease meanwhile
            await self._write(
                run,
                {
                    "status": "pending",
                    "due_ms": now_ms() + CONCURRENCY_RETRY_MS,
                    "lease_owner": "",
                    "lease_until_ms": 0,
                },
            )
            return
        if not run.started:
            self._hold(run).events.append(
                Publication(
                    "workflow.run.started",
                    {
                        "org_id": run.org_id,
                        "run_id": run.id,
                        "definition_id": run.definition_id,
                        "version": run.version,
                        "trigger_event_id": run.trigger_event_id,
                    },
                    run.org_id,
                    run.id,
                    effect_id(run.id, run.created_ms, "$started", 0),
                )
            )
            # the started event goes out with the pass's first write, and ``started`` is written with the
            # next state change (every write of the engine carries it): a crash before then publishes the
            # started event again under the same id, which consumers drop
            self.observer.run_started()
            run = replace(run, started=True)
        index_of = {s.key: i for i, s in enumerate(defn.steps)}
        # the journal is read once per claim (not at all for a run nobody advanced yet: it has none); this
        # worker appends what it writes while it holds the lease
        attempts = [] if run.fresh else await self.repo.journal_of(run.id)
        while True:
            if run.transitions >= MAX_RUN_TRANSITIONS:
                await self.finish(run, "failed", f"more than {MAX_RUN_TRANSITIONS} step attempts")
                return
            index = index_of.get(run.step)
            if index is None:
                await self.finish(run, "failed", f"the definition has no step {run.step!r}")
                return
            step = defn.steps[index]
            journaled = next((a for a in attempts if a.gen == run.gen), None)
            outcome: Outcome
            if journaled is not None and journaled.status == "completed":
                outcome = Done(journaled.output, journaled.next)
            elif journaled is not None and journaled.status == "failed":
                outcome = Failed(journaled.error)
            else:
                if step.type not in PURE_STEPS and not await self._write(run, {}):
                    return  # what was held back could not be written: the lease is gone
                started = now_ms()
                with TRACER.start_as_current_span(
                    f"workflow step {step.type}",
                    attributes={
                        "workflow.run_id": run.id,
                        "workflow.step": step.key,
                        "workflow.attempt": run.attempt,
                        "workflow.gen": run.gen,
                    },
                ) as span:
                    outcome = await self.attempt(run, defn, index, step, attempts)
                    status = (
                        "completed"
                        if isinstance(outcome, Done)
                        else "failed"
                        if isinstance(outcome, Failed)
                        else "sleep"
                    )
                    span.set_attribute("workflow.outcome", status)
                self.observer.step(step.type, status, (now_ms() - started) / 1000)
                doc: dict[str, Any] | None = None
                if isinstance(outcome, Done):
                    doc = self.repo.attempt_doc(
                        run,
                        step.key,
                        step.type,
                        "completed",
                        output=outcome.output,
                        next_key=outcome.next,
                        effect_id=effect_id(run.id, run.created_ms, step.key, run.gen)
                        if step.type in EFFECT_STEPS
                        else "",
                        started_ms=started,
                    )
                elif isinstance(outcome, Failed):
                    doc = self.repo.attempt_doc(
                        run, step.key, step.type, "failed", error=outcome.error, started_ms=started
                    )
                if doc is not None:
                    # written with the run's next write (before the next effect, sleep or end)
                    self._hold(run).journal.append(doc)
                    attempts.append(Attempt.from_doc(doc))
            if isinstance(outcome, Sleep):
                await self.sleep(run, outcome)
                return
            if isinstance(outcome, Failed):
                policy = step.retry or RetryPolicy()
                if run.attempt < policy.max_attempts:
                    delay_ms = int(backoff_seconds(policy, run.attempt, self.rng) * 1000)
                    await self._write(
                        run,
                        {
                            "status": "pending",
                            "attempt": run.attempt + 1,
                            "gen": run.gen + 1,
                            "transitions": run.transitions + 1,
                            "due_ms": now_ms() + delay_ms,
                            "timer_gen": -1,
                            "waiting_for": "",
                            "lease_owner": "",
                            "lease_until_ms": 0,
                        },
                    )
                    return
                if step.catch is None:
                    await self.finish(run, "failed", outcome.error, step=step.key)
                    return
                next_key = step.catch.next
            else:
                next_key = outcome.next
            if next_key == END:
                await self.finish(run, "completed", "")
                return
            changes: dict[str, Any] = {
                "step": next_key,
                "attempt": 1,
                "gen": run.gen + 1,
                "transitions": run.transitions + 1,
                "status": "running",
                "due_ms": now_ms(),
                "timer_gen": -1,
                "waiting_for": "",
                "lease_until_ms": now_ms() + self.lease_ms,
            }
            # held back until the pass's next write: a crash before it redoes this step under the same generation
            self._hold(run).changes.update(changes)
            run = replace(run, step=next_key, attempt=1, gen=run.gen + 1, transitions=run.transitions + 1, timer_gen=-1)

    async def sleep(self, run: Run, outcome: Sleep) -> None:
        """Park the run until ``outcome.until_ms`` (a wait also until an event of its type arrives, a report
        step until its answer arrives)."""
        changes: dict[str, Any] = {
            "status": "waiting",
            "due_ms": outcome.until_ms,
            "timer_gen": run.gen,
            "timer_ms": outcome.until_ms,
            "waiting_for": outcome.waiting_for,
            "lease_owner": "",
            "lease_until_ms": 0,
        }
        if outcome.report_request:
            changes["report_request"] = outcome.report_request
        written = await self._write(run, changes)
        if not written or not outcome.waiting_for:
            return
        # an event that arrived between the attempt's look and the write above did not wake the run (it was
        # not waiting yet): look again, and make it due now if one came
        if outcome.report_request:
            came = await self.repo.reply_for(run.org_id, outcome.report_request) is not None
        else:
            came = await self.repo.count_received(run.id, outcome.waiting_for) > outcome.seen
        if came:
            await self.repo.wake_run(run.id)

    async def finish(self, run: Run, status: str, error: str, *, step: str = "") -> None:
        """End the run: the lifecycle event first (its id is fixed per run; it goes out in one outbox insert
        with the events held back), then the journal held back, then the state."""
        base = {"org_id": run.org_id, "run_id": run.id, "definition_id": run.definition_id, "version": run.version}
        end_id = effect_id(run.id, run.created_ms, "$end", 0)
        if status == "completed":
            ending = Publication("workflow.run.completed", base, run.org_id, run.id, end_id)
        else:
            data = {**base, "step": step or run.step, "error": error[:500]}
            ending = Publication("workflow.run.failed", data, run.org_id, run.id, end_id)
        self._hold(run).events.append(ending)
        now = now_ms()
        # the run's lifetime as one span of its trace (the run's own span ended when the run was stored)
        TRACER.start_span(
            "workflow run ended",
            start_time=run.created_ms * 1_000_000,
            attributes={"workflow.run_id": run.id, "workflow.status": status, "workflow.step": step or run.step},
        ).end()
        if await self._write(
            run,
            {
                "status": status,
                **ENDED,
                "error": error[:500],
                "finished_ms": now,
                "waiting_for": "",
                "lease_owner": "",
                "lease_until_ms": 0,
            },
        ):
            self.observer.run_finished(status)
        if run.concurrency_key:
            await self.repo.free_slots(run.id)

    async def attempt(self, run: Run, defn: Definition, index: int, step: Step, attempts: list[Attempt]) -> Outcome:
        """One attempt of ``step``: its outcome (done with an output and the next key, asleep until a time,
        or failed). Never raises for the step's own faults."""
        ctx = context_of(run, attempts)
        try:
            if step.timeout_seconds is not None and isinstance(step, NotifyStep | EmitStep | ConditionStep):
                return await asyncio.wait_for(
                    self._attempt(run, defn, index, step, ctx, attempts), step.timeout_seconds
                )
            return await self._attempt(run, defn, index, step, ctx, attempts)
        except TimeoutError:
            return Failed(f"step timed out after {step.timeout_seconds} s")
        except (StepError, ExpressionError, ValueError, TypeError) as exc:
            text = str(exc) if not isinstance(exc, ValidationError) else exc.errors()[0]["msg"]
            return Failed(f"{type(exc).__name__}: {text}"[:500])

    async def _attempt(
        self,
        run: Run,
        defn: Definition,
        index: int,
        step: Step,
        ctx: dict[str, Any],
        attempts: list[Attempt],
    ) -> Outcome:
        now = now_ms()
        eid = effect_id(run.id, run.created_ms, step.key, run.gen)
        if isinstance(step, NotifyStep):
            inputs = render({"user_id": step.user_id, "data": step.data}, ctx)
            data = NotificationRequested(
                org_id=run.org_id,
                template=step.template,
                user_id=inputs["user_id"],
                role=step.role,
                data=inputs["data"],
            )
            await self.effects.publish(
                "notification.requested", data.model_dump(mode="json"), org_id=run.org_id, subject=run.id, event_id=eid
            )
            return Done({"event_id": eid, "inputs": inputs}, following(defn, index, step.next))
        if isinstance(step, EmitStep):
            payload = render(step.data, ctx)
            emitted = Emitted(org_id=run.org_id, type=step.event_type, data=payload, run_id=run.id, step=step.key)
            await self.effects.publish(
                "workflow.emitted", emitted.model_dump(mode="json"), org_id=run.org_id, subject=run.id, event_id=eid
            )
            return Done({"event_id": eid, "type": step.event_type, "data": payload}, following(defn, index, step.next))
        if isinstance(step, ConditionStep):
            for j, branch in enumerate(step.branches):
                if truthy(evaluate(branch.when, ctx)):
                    return Done({"branch": j, "next": branch.next}, branch.next)
            target = following(defn, index, step.default or step.next)
            return Done({"branch": None, "next": target}, target)
        if isinstance(step, DelayStep):
            if run.timer_gen == run.gen:
                if now >= run.timer_ms:
                    return Done({"due_ms": run.timer_ms, "fired_ms": now}, following(defn, index, step.next))
                return Sleep(run.timer_ms)
            due = now + int(step.seconds * 1000) if step.seconds is not None else _parse_until(render(step.until, ctx))
            if due <= now:
                return Done({"due_ms": due, "fired_ms": now}, following(defn, index, step.next))
            return Sleep(due)
        if isinstance(step, ReportStep):
            return await self._report(run, defn, index, step, ctx, eid, now)
        assert isinstance(step, WaitStep)
        found, seen = await self._matching(run, step, ctx, attempts)
        if found is not None:
            return Done({"event": found}, following(defn, index, step.next))
        if run.timer_gen == run.gen:
            if now >= run.timer_ms:
                if step.on_timeout is not None:
                    return Done({"event": None, "timed_out": True}, step.on_timeout)
                raise StepError(f"no matching {step.event_type} within {step.wait_seconds} s")
            return Sleep(run.timer_ms, step.event_type, seen)
        return Sleep(now + int(step.wait_seconds * 1000), step.event_type, seen)

    async def _report(
        self, run: Run, defn: Definition, index: int, step: ReportStep, ctx: dict[str, Any], eid: str, now: int
    ) -> Outcome:
        """The ``report`` step: the answer to request ``eid`` when it came (done, or failed for
        ``report.failed``); else past the deadline a failure; else (the first look of this attempt) send
        ``report.requested`` with ``request_id`` = ``eid`` and sleep until the answer or the deadline. After
        a crash between the request and the sleep the request is sent again under the same id (the report
        service files one report per request id)."""
        reply = await self.repo.reply_for(run.org_id, eid)
        if reply is not None:
            try:
                return Done(report_output(reply), following(defn, index, step.next))
            except ReportFailedError as exc:
                raise StepError(f"report failed: {exc}") from None
        if run.timer_gen == run.gen:
            if now >= run.timer_ms:
                raise StepError(f"no answer to the report request within {self._report_timeout(step):g} s")
            return Sleep(run.timer_ms, REPORT_WAIT, report_request=eid)
        data = report_request(step, ctx, run.org_id, eid, now)
        await self.effects.publish(
            "report.requested", data.model_dump(mode="json"), org_id=run.org_id, subject=run.id, event_id=eid
        )
        return Sleep(now + int(self._report_timeout(step) * 1000), REPORT_WAIT, report_request=eid)

    @staticmethod
    def _report_timeout(step: ReportStep) -> float:
        return step.timeout_seconds if step.timeout_seconds is not None else REPORT_TIMEOUT_SECONDS

    async def _matching(
        self, run: Run, step: WaitStep, ctx: dict[str, Any], attempts: list[Attempt]
    ) -> tuple[dict[str, Any] | None, int]:
        """The oldest event kept for the run of the wait's type that matches and that no earlier wait of the
        run took (``None`` when none), and how many events of the type are kept."""
        taken = {
            a.output["event"]["id"]
            for a in attempts
            if a.type == "wait_for_event" and isinstance(a.output, dict) and isinstance(a.output.get("event"), dict)
        }
        kept = await self.repo.received_for(run.id, step.event_type)
        for event in kept:
            if event.get("id") in taken:
                continue
            if step.match is None or truthy(evaluate(step.match, {**ctx, "event": event})):
                if json_size(event) > MAX_STEP_OUTPUT_BYTES:
                    raise StepError("the matching event is larger than the step output limit")
                result: dict[str, Any] = event
                return result, len(kept)
        return None, len(kept)
