"""Workflow pages: definitions (list, view with versions, create and edit as JSON — the language's faults
shown with their JSON paths —, enable/disable, delete, dry run with a sample event, run now), runs (list with
filters and paging, a run's timeline, cancel, rerun from a step on the pinned or the latest version).

Every page calls the workflow API (``/api/v1/workflows``) with the user's token; members read, owners and
admins change.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from ..client import ApiProblem
from ..web import Console, Section, console_of, form, managers_only, redirect, signed_in
from .pagekit import form_time, ident, pretty, query_of, shown_time

SERVICE = "workflow"
RUN_STATUSES = ("pending", "running", "waiting", "completed", "failed", "cancelled")
STEP_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,47}$")
EXAMPLE = {
    "name": "Welcome new owners",
    "trigger": {"type": "user.registered", "filter": "event.data.role == 'owner'"},
    "steps": [
        {
            "key": "hello",
            "type": "notify",
            "template": "workflow_notice",
            "user_id": "${trigger.data.user_id}",
            "data": {"subject": "Welcome", "message": "Hello ${trigger.data.name}"},
        }
    ],
}


def _faults(problem: ApiProblem) -> list[tuple[str, str]]:
    """``(JSON path, message)`` of each fault of a 422 (``errors[].field``, dotted, as ``$.steps.0.key``)."""
    out = []
    for err in problem.errors:
        field = str(err.get("field") or ".".join(str(p) for p in err.get("loc", []) if p != "body"))
        out.append(("$." + field if field else "$", str(err.get("message") or err.get("msg") or "")))
    return out


def _parse_json(text: str, what: str) -> Any:
    """The JSON in ``text``; ``ValueError`` saying where it breaks."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"The {what} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from exc


@signed_in
async def definitions_page(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    cursor = request.query.get("cursor", "")[:256]
    answer = await console.client.call(request, SERVICE, "GET", "/definitions", params={"limit": 50, "cursor": cursor})
    return console.render(
        request, "workflows/definitions.html", definitions=answer["items"], next_cursor=answer.get("next_cursor")
    )


def _render_form(
    request: web.Request,
    definition: dict[str, Any] | None,
    text: str,
    error: str = "",
    faults: list[tuple[str, str]] | None = None,
    status: int = 200,
) -> web.Response:
    return console_of(request).render(
        request,
        "workflows/definition_form.html",
        status=status,
        definition=definition,
        text=text,
        error=error,
        faults=faults or [],
    )


@managers_only
async def new_definition_page(request: web.Request) -> web.StreamResponse:
    return _render_form(request, None, pretty(EXAMPLE))


async def _save(request: web.Request, definition: dict[str, Any] | None) -> web.StreamResponse:
    console = console_of(request)
    text = (await form(request)).get("definition", "")
    try:
        body = _parse_json(text, "definition")
    except ValueError as exc:
        return _render_form(request, definition, text, str(exc), status=422)
    try:
        if definition is None:
            saved = await console.client.call(request, SERVICE, "POST", "/definitions", json_body=body)
        else:
            saved = await console.client.call(
                request, SERVICE, "PUT", f"/definitions/{definition['id']}", json_body=body
            )
    except ApiProblem as problem:
        if problem.status >= 500 or problem.status == 404:
            raise
        return _render_form(
            request, definition, text, problem.detail or problem.title, _faults(problem), status=problem.status
        )
    request["session"].flash_message("ok", f"Saved as version {saved['version']}.")
    return redirect(request, f"/workflows/definitions/{saved['id']}")


@managers_only
async def create_definition(request: web.Request) -> web.StreamResponse:
    return await _save(request, None)


@signed_in
async def definition_page(request: web.Request) -> web.StreamResponse:
    """A definition (``?version=`` one of its versions), its versions, its recent runs and the dry-run form."""
    console = console_of(request)
    definition_id = ident(request, "definition_id")
    version = request.query.get("version", "")
    path = f"/definitions/{definition_id}"
    if version:
        if not re.fullmatch(r"[1-9][0-9]{0,5}", version):
            raise web.HTTPNotFound(reason="Not found", text="There is no such version.")
        path += f"/versions/{version}"
    definition = await console.client.call(request, SERVICE, "GET", path)
    runs = await console.client.call(
        request, SERVICE, "GET", "/runs", params={"definition_id": definition_id, "limit": 10}
    )
    return console.render(
        request,
        "workflows/definition.html",
        definition=definition,
        body=pretty(definition["definition"]),
        runs=runs["items"],
        sample=request.get("sample", '{\n  "data": {}\n}'),
        dry_run=request.get("dry_run"),
        dry_error=request.get("dry_error", ""),
    )


@managers_only
async def edit_definition_page(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    definition_id = ident(request, "definition_id")
    definition = await console.client.call(request, SERVICE, "GET", f"/definitions/{definition_id}")
    return _render_form(request, definition, pretty(definition["definition"]))


@managers_only
async def update_definition(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    definition_id = ident(request, "definition_id")
    definition = await console.client.call(request, SERVICE, "GET", f"/definitions/{definition_id}")
    return await _save(request, definition)


@managers_only
async def set_enabled(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    definition_id = ident(request, "definition_id")
    action = request.match_info["action"]
    await console.client.call(request, SERVICE, "POST", f"/definitions/{definition_id}/{action}")
    text = "Events trigger it again." if action == "enable" else "Events no longer trigger it; runs in flight go on."
    request["session"].flash_message("ok", text)
    return redirect(request, f"/workflows/definitions/{definition_id}")


@managers_only
async def delete_definition(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    definition_id = ident(request, "definition_id")
    await console.client.call(request, SERVICE, "DELETE", f"/definitions/{definition_id}")
    request["session"].flash_message("ok", "The definition is deleted; runs in flight finish on their version.")
    return redirect(request, "/workflows")


@signed_in
async def dry_run(request: web.Request) -> web.StreamResponse:
    """The path a run would take for the sample event (``{"data": …, "subject": …}``); nothing is done."""
    console = console_of(request)
    definition_id = ident(request, "definition_id")
    text = (await form(request)).get("sample", "")
    request["sample"] = text
    try:
        sample = _parse_json(text, "sample event")
        if not isinstance(sample, dict):
            raise ValueError('The sample event is a JSON object: {"data": {...}, "subject": "..."}.')
        request["dry_run"] = await console.client.call(
            request, SERVICE, "POST", f"/definitions/{definition_id}/dry-run", json_body=sample
        )
    except ValueError as exc:
        request["dry_error"] = str(exc)
    except ApiProblem as problem:
        if problem.status >= 500 or problem.status == 404:
            raise
        request["dry_error"] = problem.message
    return await definition_page(request)


@managers_only
async def trigger(request: web.Request) -> web.StreamResponse:
    """Start a run now with the sample event of the dry-run form (a ``manual`` trigger, or any other)."""
    console = console_of(request)
    definition_id = ident(request, "definition_id")
    text = (await form(request)).get("sample", "")
    request["sample"] = text
    try:
        sample = _parse_json(text, "sample event")
        if not isinstance(sample, dict):
            raise ValueError('The sample event is a JSON object: {"data": {...}, "subject": "..."}.')
        run = await console.client.call(
            request, SERVICE, "POST", f"/definitions/{definition_id}/trigger", json_body=sample
        )
    except ValueError as exc:
        request["dry_error"] = str(exc)
    except ApiProblem as problem:
        if problem.status >= 500 or problem.status == 404:
            raise
        request["dry_error"] = problem.message
    else:
        request["session"].flash_message("ok", "The run has started.")
        return redirect(request, f"/workflows/runs/{run['id']}")
    return await definition_page(request)


@signed_in
async def runs_page(request: web.Request) -> web.StreamResponse:
    """Runs, newest first, filtered by definition, status, trigger event and creation time; paged."""
    console = console_of(request)
    shown = query_of(request, "definition_id", "status", "trigger_event_id", "since", "until", "cursor")
    params: dict[str, Any] = {"limit": 50, "cursor": shown["cursor"], "trigger_event_id": shown["trigger_event_id"]}
    fault = ""
    if shown["definition_id"]:
        if re.fullmatch(r"wd_[0-9a-f]{32}", shown["definition_id"]):
            params["definition_id"] = shown["definition_id"]
        else:
            fault = "Definition: not a definition id (wd_…)"
    if shown["status"] in RUN_STATUSES:
        params["status"] = shown["status"]
    for name in ("since", "until"):
        try:
            params[name] = form_time(shown[name], name)
        except ValueError as exc:
            fault = str(exc)
    items: list[dict[str, Any]] = []
    next_cursor = None
    if not fault:
        try:
            answer = await console.client.call(request, SERVICE, "GET", "/runs", params=params)
        except ApiProblem as problem:
            if problem.status != 422:
                raise
            fault = problem.message
        else:
            items, next_cursor = answer["items"], answer.get("next_cursor")
    return console.render(
        request,
        "workflows/runs.html",
        runs=items,
        next_cursor=next_cursor,
        filters=shown,
        fault=fault,
        statuses=RUN_STATUSES,
        more_query={k: v for k, v in shown.items() if v and k != "cursor"},
    )


@signed_in
async def run_page(request: web.Request) -> web.StreamResponse:
    """A run and its timeline (each step attempt: status, attempt, error, output, timings)."""
    console = console_of(request)
    run_id = ident(request, "run_id")
    run = await console.client.call(request, SERVICE, "GET", f"/runs/{run_id}")
    steps = list(dict.fromkeys(a["key"] for a in run["timeline"]))
    return console.render(
        request,
        "workflows/run.html",
        run=run,
        steps=steps,
        trigger=pretty(run.get("trigger", {})),
        outputs={i: pretty(a["output"]) for i, a in enumerate(run["timeline"]) if a.get("output") is not None},
    )


@managers_only
async def cancel_run(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    run_id = ident(request, "run_id")
    try:
        await console.client.call(request, SERVICE, "POST", f"/runs/{run_id}/cancel")
    except ApiProblem as problem:
        if problem.status >= 500 or problem.status == 404:
            raise
        request["session"].flash_message("error", problem.message)
    else:
        request["session"].flash_message("ok", "The run is cancelled.")
    request["session_changed"] = True
    return redirect(request, f"/workflows/runs/{run_id}")


@managers_only
async def rerun(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    run_id = ident(request, "run_id")
    fields = await form(request)
    step = fields.get("from_step", "")
    version = fields.get("version", "pinned")
    back = f"/workflows/runs/{run_id}"
    if not STEP_KEY.fullmatch(step) or version not in ("pinned", "latest"):
        request["session"].flash_message("error", "Choose the step to rerun from and the version.")
        return redirect(request, back)
    try:
        answer = await console.client.call(
            request, SERVICE, "POST", f"/runs/{run_id}/rerun", json_body={"from_step": step, "version": version}
        )
    except ApiProblem as problem:
        if problem.status >= 500 or problem.status == 404:
            raise
        request["session"].flash_message("error", problem.message)
        return redirect(request, back)
    reused = ", ".join(answer.get("reused_steps", [])) or "none"
    request["session"].flash_message("ok", f"A new run from {step} on version {answer['version']} (reused: {reused}).")
    return redirect(request, f"/workflows/runs/{answer['run']['id']}")


def register(console: Console, router: web.UrlDispatcher) -> None:
    console.env.filters.setdefault("when", shown_time)
    console.section(Section("workflows", "Workflows", "/workflows", SERVICE))
    router.add_get("/workflows", definitions_page)
    router.add_get("/workflows/definitions/new", new_definition_page)
    router.add_post("/workflows/definitions", create_definition)
    router.add_get("/workflows/definitions/{definition_id}", definition_page)
    router.add_get("/workflows/definitions/{definition_id}/edit", edit_definition_page)
    router.add_post("/workflows/definitions/{definition_id}/edit", update_definition)
    router.add_post("/workflows/definitions/{definition_id}/{action:enable|disable}", set_enabled)
    router.add_post("/workflows/definitions/{definition_id}/delete", delete_definition)
    router.add_post("/workflows/definitions/{definition_id}/dry-run", dry_run)
    router.add_post("/workflows/definitions/{definition_id}/trigger", trigger)
    router.add_get("/workflows/runs", runs_page)
    router.add_get("/workflows/runs/{run_id}", run_page)
    router.add_post("/workflows/runs/{run_id}/cancel", cancel_run)
    router.add_post("/workflows/runs/{run_id}/rerun", rerun)
