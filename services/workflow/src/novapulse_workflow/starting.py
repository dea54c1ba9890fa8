"""Starting runs: the trigger filter's verdict aside, what every start does — flow-control keys
(idempotency, debounce, concurrency) and the run document. Shared by event triggers and manual triggers."""

from __future__ import annotations

import json
import logging
from typing import Any

from .expressions import ExpressionError, evaluate
from .language import Definition, listened_types
from .repository import Repository, Run

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


async def start_run(repo: Repository, def_id: str, version: int, defn: Definition, event: dict[str, Any]) -> Run | None:
    """Start a run of ``defn`` (version ``version``) for trigger ``event``; ``None`` when none starts: the
    same event started one already (unique trigger key), or the idempotency key is held by another event
    within its window. Debounce supersedes the runs of the same key still waiting to start and delays this
    one; concurrency records the key the engine takes a slot for."""
    flow = defn.flow
    delay_ms = 0
    debounce_key = ""
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
    if flow is not None and flow.concurrency is not None:
        key = flow_key(flow.concurrency.key, event)
        if key is not None:
            concurrency_key = f"{def_id}:{key}"
            concurrency_limit = flow.concurrency.limit
    run = await repo.insert_run(
        event.get("org_id") or "",
        def_id,
        version,
        event,
        defn.steps[0].key,
        listened_types(defn),
        trigger_key=f"{def_id}:{event['id']}",
        delay_ms=delay_ms,
        debounce_key=debounce_key,
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit,
    )
    if run is not None and debounce_key:
        await repo.supersede(debounce_key, run.id)
    return run
