"""Views of the workflow service: parse (declared models) → call the service layer → map to models.

Domain errors raised below are answered by this module's one table, :data:`PROBLEMS`. Members read; owners
and admins change (``roles.MANAGERS``).
"""

from __future__ import annotations

import re

from aiohttp import web

from novapulse_runtime.clock import to_ms
from novapulse_runtime.errors import ErrorTable, Problem, field_error
from novapulse_runtime.paging import PageQuery, page
from novapulse_runtime.ratelimit import RateLimit, by_org
from novapulse_runtime.roles import MANAGERS
from novapulse_runtime.routes import Routes, path_id
from novapulse_runtime.tokens import principal, require_role

from .app_events import AppEvents
from .constants import API_PREFIX, DEFINITION_ID, MAX_IDEMPOTENCY_KEY, RUN_ID
from .definitions import DefinitionService
from .errors import (
    BadIdempotencyKey,
    DefinitionDisabled,
    DefinitionInvalid,
    DefinitionLimitReached,
    DefinitionNotFound,
    DuplicateTrigger,
    EventIdReused,
    EventTooLarge,
    NotAnApplicationEventType,
    RunFinished,
    RunNotFound,
    UnknownStep,
    UnstorableData,
)
from .language import Definition
from .models import (
    AttemptOut,
    DefinitionList,
    DefinitionOut,
    DefinitionSummary,
    DryRunOut,
    DryRunStep,
    EventAccepted,
    EventIn,
    RerunIn,
    RerunOut,
    RunDetail,
    RunList,
    RunOut,
    RunQuery,
    TriggerIn,
)
from .repository import RunFilter
from .runs import RunService

PROBLEMS: ErrorTable = {
    DefinitionNotFound: Problem(404),
    RunNotFound: Problem(404),
    DefinitionInvalid: Problem(422, title="Invalid definition"),
    DefinitionLimitReached: Problem(409, title="Definition limit reached"),
    DefinitionDisabled: Problem(409, title="Definition disabled"),
    RunFinished: Problem(409, title="Run finished"),
    DuplicateTrigger: Problem(409, title="Duplicate trigger"),
    UnknownStep: Problem(422, title="Unknown step"),
    NotAnApplicationEventType: Problem(422, title="Invalid event"),
    EventTooLarge: Problem(413, title="Event too large"),
    UnstorableData: Problem(422, title="Invalid event"),
    EventIdReused: Problem(409, title="Event id reused"),
    BadIdempotencyKey: Problem(422, title="Invalid Idempotency-Key"),
}
"""How each domain error of this service is answered (RFC 9457 problems)."""

WRITE_LIMIT = RateLimit("workflow-write-org", 120, 60, key=by_org)
"""120 changes a minute per organisation."""
TRIGGER_LIMIT = RateLimit("workflow-trigger-org", 600, 60, key=by_org)
"""600 manual triggers and reruns a minute per organisation."""
EVENT_LIMIT = RateLimit("workflow-events-org", 1200, 60, key=by_org)
"""1 200 posted application events a minute per organisation."""
VERSION = re.compile(r"[1-9][0-9]{0,5}")


def build_routes(definitions: DefinitionService, runs: RunService, app_events: AppEvents) -> Routes:
    """The service's routes under ``/api/v1/workflows``."""
    routes = Routes(prefix=API_PREFIX, tags=["workflows"], problems=PROBLEMS)

    def def_id(request: web.Request) -> str:
        return path_id(request, "definition_id", DEFINITION_ID)

    def run_id(request: web.Request) -> str:
        return path_id(request, "run_id", RUN_ID)

    @routes.post(
        "/definitions", body=Definition, response=DefinitionOut, status=201, auth=True, rate_limits=[WRITE_LIMIT]
    )
    async def create_definition(request: web.Request, body: Definition) -> DefinitionOut:
        """Create a definition (version 1, enabled). Faults of the language are a 422 whose ``errors`` name
        each fault's path."""
        who = require_role(request, *MANAGERS)
        return DefinitionOut.of_versioned(await definitions.create(who.org_id, who.user_id, body))

    @routes.get("/definitions", query=PageQuery, response=DefinitionList, auth=True)
    async def list_definitions(request: web.Request, query: PageQuery) -> DefinitionList:
        """The organisation's definitions, newest first, one page at a time."""
        found = await definitions.listing(principal(request).org_id, query.after, query.fetch)
        items, cursor = page(found, query.limit, key=lambda d: d.id)
        return DefinitionList(items=[DefinitionSummary.of(d) for d in items], next_cursor=cursor)

    @routes.get("/definitions/{definition_id}", response=DefinitionOut, auth=True)
    async def get_definition(request: web.Request) -> DefinitionOut:
        """A definition with its current version."""
        return DefinitionOut.of_versioned(await definitions.get(principal(request).org_id, def_id(request)))

    @routes.put(
        "/definitions/{definition_id}", body=Definition, response=DefinitionOut, auth=True, rate_limits=[WRITE_LIMIT]
    )
    async def update_definition(request: web.Request, body: Definition) -> DefinitionOut:
        """Make a new version current (runs in flight stay on theirs)."""
        who = require_role(request, *MANAGERS)
        return DefinitionOut.of_versioned(await definitions.update(who.org_id, who.user_id, def_id(request), body))

    @routes.get("/definitions/{definition_id}/versions/{version}", response=DefinitionOut, auth=True)
    async def get_version(request: web.Request) -> DefinitionOut:
        """One version of a definition."""
        version = int(path_id(request, "version", VERSION))
        return DefinitionOut.of_versioned(await definitions.get(principal(request).org_id, def_id(request), version))

    @routes.delete("/definitions/{definition_id}", auth=True, rate_limits=[WRITE_LIMIT])
    async def delete_definition(request: web.Request) -> None:
        """Delete a definition (runs in flight finish on their version)."""
        who = require_role(request, *MANAGERS)
        await definitions.delete(who.org_id, def_id(request))

    @routes.post("/definitions/{definition_id}/enable", response=DefinitionOut, auth=True, rate_limits=[WRITE_LIMIT])
    async def enable(request: web.Request) -> DefinitionOut:
        """Let events trigger the definition."""
        who = require_role(request, *MANAGERS)
        return DefinitionOut.of_versioned(await definitions.set_enabled(who.org_id, def_id(request), True))

    @routes.post("/definitions/{definition_id}/disable", response=DefinitionOut, auth=True, rate_limits=[WRITE_LIMIT])
    async def disable(request: web.Request) -> DefinitionOut:
        """Stop events from triggering the definition (runs in flight go on)."""
        who = require_role(request, *MANAGERS)
        return DefinitionOut.of_versioned(await definitions.set_enabled(who.org_id, def_id(request), False))

    @routes.post(
        "/definitions/{definition_id}/trigger",
        body=TriggerIn,
        response=RunOut,
        status=202,
        auth=True,
        rate_limits=[TRIGGER_LIMIT],
    )
    async def trigger(request: web.Request, body: TriggerIn) -> RunOut:
        """Start a run now with a trigger event carrying ``data``."""
        who = require_role(request, *MANAGERS)
        return RunOut.of(await runs.trigger(who.org_id, def_id(request), body.data, body.subject))

    @routes.post("/definitions/{definition_id}/dry-run", body=TriggerIn, response=DryRunOut, auth=True)
    async def dry_run(request: web.Request, body: TriggerIn) -> DryRunOut:
        """The path a run would take for a sample event and each step's rendered inputs; nothing is done."""
        who = principal(request)
        version, passes, path = await definitions.dry_run(who.org_id, def_id(request), body.data, body.subject)
        return DryRunOut(version=version, filter_passes=passes, path=[DryRunStep(**p) for p in path])

    @routes.post("/events", body=EventIn, response=EventAccepted, status=202, auth=True, rate_limits=[EVENT_LIMIT])
    async def post_event(request: web.Request, body: EventIn) -> EventAccepted:
        """Post an application event: start a run of every enabled definition whose trigger is its ``type``
        (and whose filter holds). Idempotent by the event ``id`` or the ``Idempotency-Key`` header: the same
        event again starts nothing new and answers the first post's runs (``duplicate``); the same id with
        a different event is a 409. ``data`` over 64 000 bytes is a 413."""
        who = require_role(request, *MANAGERS)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
            raise BadIdempotencyKey(
                f"Idempotency-Key must have 1 to {MAX_IDEMPOTENCY_KEY} characters",
                errors=[field_error("Idempotency-Key", "1 to 256 characters", "string_length", location="header")],
            )
        accepted = await app_events.accept(
            who.org_id, who.user_id, body.type, body.data, body.subject, event_id=body.id, idempotency_key=key
        )
        return EventAccepted(event_id=accepted.event_id, runs=accepted.runs, duplicate=accepted.duplicate)

    @routes.get("/runs", query=RunQuery, response=RunList, auth=True)
    async def list_runs(request: web.Request, query: RunQuery) -> RunList:
        """Runs, newest first; filter by definition, status, trigger event id and creation time."""
        filters = RunFilter(
            definition_id=query.definition_id,
            status=query.status,
            trigger_event_id=query.trigger_event_id,
            since_ms=to_ms(query.since) if query.since else None,
            until_ms=to_ms(query.until) if query.until else None,
        )
        found = await runs.listing(principal(request).org_id, filters, query.after, query.fetch)
        items, cursor = page(found, query.limit, key=lambda r: r.id)
        return RunList(items=[RunOut.of(r) for r in items], next_cursor=cursor)

    @routes.get("/runs/{run_id}", response=RunDetail, auth=True)
    async def get_run(request: web.Request) -> RunDetail:
        """A run and its timeline: every step attempt with its status, output, error and timings."""
        run, attempts = await runs.get(principal(request).org_id, run_id(request))
        return RunDetail(
            **RunOut.of(run).model_dump(), trigger=run.trigger, timeline=[AttemptOut.of(a) for a in attempts]
        )

    @routes.post("/runs/{run_id}/cancel", response=RunOut, auth=True, rate_limits=[WRITE_LIMIT])
    async def cancel(request: web.Request) -> RunOut:
        """Cancel an unfinished run."""
        who = require_role(request, *MANAGERS)
        return RunOut.of(await runs.cancel(who.org_id, run_id(request)))

    @routes.post(
        "/runs/{run_id}/rerun", body=RerunIn, response=RerunOut, status=201, auth=True, rate_limits=[TRIGGER_LIMIT]
    )
    async def rerun(request: web.Request, body: RerunIn) -> RerunOut:
        """A new run from step ``from_step`` reusing the journaled outputs of the steps before it, on the
        original's version (``pinned``) or the current one (``latest``)."""
        who = require_role(request, *MANAGERS)
        return RerunOut.of(await runs.rerun(who.org_id, run_id(request), body.from_step, body.version == "latest"))

    return routes
