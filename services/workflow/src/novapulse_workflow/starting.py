"""Starting runs: the trigger filter's verdict aside, what every start does — flow-control keys
(idempotency, debounce, concurrency) and the run document. Shared by event triggers and manual triggers."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any

from .expressions import ExpressionError, evaluate, truthy
from .language import Definition, listened_types
from .repository import Repository, Run
from .tracing import run_span

log = logging.getLogger(__name__)


def flow_key(expression: str, event: dict[str, Any]) -> str | None:
    """The value of a flow-control key expression over ``{event}`` as text; ``None`` for ``null`` or an
    expression that fails (no limit applies)."""
    try:
        value = evaluate(expression, {"event": event})
    except ExpressionError as exc:
        log.warning("flow-control key failed", extra={"error": str(exc)})
        return None
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


class Versions:
    """Parsed definition versions, kept (versions are immutable, so a kept one is never stale): at most
    ``size`` of them, the least recently used dropped first."""

    def __init__(self, repo: Repository, size: int = 1024) -> None:
        self.repo = repo
        self.size = size
        self._kept: OrderedDict[tuple[str, str, int], Definition] = OrderedDict()

    async def get(self, org_id: str, def_id: str, version: int) -> Definition | None:
        """Version ``version`` of definition ``def_id`` of ``org_id``; ``None`` when there is none."""
        key = (org_id, def_id, version)
        found = self._kept.get(key)
        if found is not None:
            self._kept.move_to_end(key)
            return found
        body = await self.repo.get_version(org_id, def_id, version)
        if body is None:
            return None
        defn = Definition.model_validate(body)
        self._kept[key] = defn
        if len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return defn


async def start_triggered(repo: Repository, event: dict[str, Any], versions: Versions | None = None) -> list[Run]:
    """Start a run of every enabled definition of ``event``'s organisation whose trigger is ``event``'s type
    and whose filter holds (a filter that fails on the event starts nothing); the runs started. Idempotent:
    the same event again starts no second run (unique ``<definition id>:<event id>``). ``versions`` keeps
    the parsed versions between calls."""
    org_id = event.get("org_id") or ""
    versions = versions or Versions(repo)
    started: list[Run] = []
    for record in await repo.triggered_by(org_id, event["type"]):
        defn = await versions.get(org_id, record.id, record.version)
        if defn is None:
            continue
        if defn.trigger.filter is not None:
            try:
                if not truthy(evaluate(defn.trigger.filter, {"event": event})):
                    continue
            except ExpressionError as exc:
                log.warning("trigger filter failed", extra={"definition": record.id, "error": str(exc)})
                continue
        new = await start_run(repo, record.id, record.version, defn, event)
        if new is not None:
            started.append(new)
    return started


async def start_run(repo: Repository, def_id: str, version: int, defn: Definition, event: dict[str, Any]) -> Run | None:
    """Start a run of ``defn`` (version ``version``) for trigger ``event``; ``None`` when none starts: the
    same event started one already (unique trigger key), or the idempotency key is held by another event
    within its window. Debounce delays this run and keeps, per key, only the newest trigger's run that has not
    started (:func:`debounce`); concurrency records the key the engine takes a slot for."""
    flow = defn.flow
    delay_ms = 0
    debounce_key = ""
    debounce_seq = 0
    concurrency_key = ""
    concurrency_limit = 0
    if flow is not None and flow.idempotency is not None:
        key = flow_key(flow.idempotency.key, event)
        if key is not None:
            held = await repo.hold_key(f"idem:{def_id}:{key}", event["id"], int(flow.idempotency.window_seconds * 1000))
            if not held:
                return None
    if flow is not None and flow.debounce is not None:
        key = flow_key(flow.debounce.key, event)
        if key is not None:
            debounce_key = f"{def_id}:{key}"
            delay_ms = int(flow.debounce.seconds * 1000)
    trigger_key = f"{def_id}:{event['id']}"
    if debounce_key:
        existing = await repo.run_by_trigger_key(trigger_key)
        if existing is not None:  # the same trigger again (a crash between the insert and debounce?)
            await debounce(repo, existing)
            return None
        debounce_seq = await repo.next_debounce_seq(debounce_key)
    if flow is not None and flow.concurrency is not None:
        key = flow_key(flow.concurrency.key, event)
        if key is not None:
            concurrency_key = f"{def_id}:{key}"
            concurrency_limit = flow.concurrency.limit
    with run_span(event.get("org_id") or "", def_id, version) as (span, traceparent):
        run = await repo.insert_run(
            event.get("org_id") or "",
            def_id,
            version,
            event,
            defn.steps[0].key,
            listened_types(defn),
            trigger_key=trigger_key,
            delay_ms=delay_ms,
            debounce_key=debounce_key,
            debounce_seq=debounce_seq,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
            traceparent=traceparent,
        )
        span.set_attribute("workflow.run_id", run.id if run is not None else "")
    if run is None:
        if debounce_key and (existing := await repo.run_by_trigger_key(trigger_key)) is not None:
            await debounce(repo, existing)  # the same trigger handled at once elsewhere: finish its work
        return None
    if debounce_key:
        await debounce(repo, run)
    return run


async def debounce(repo: Repository, run: Run) -> None:
    """Make ``run`` its debounce key's current run unless a newer trigger's is, and cancel the loser (the run
    replaced, or ``run`` itself) if it has not started. Atomic in the database (``Repository.make_current``),
    so however the triggers of one key spread over workers, one run per key and window survives; idempotent,
    so a redelivered trigger repairs a start that crashed between the insert and this."""
    if not run.debounce_key or run.status != "pending" or run.started:
        return
    loser = await repo.make_current(run.debounce_key, run.debounce_seq, run.id)
    if loser is not None:
        await repo.cancel_debounced(loser)
