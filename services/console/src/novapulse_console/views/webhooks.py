"""The webhooks portal: endpoints (create with the event-type picker, edit, enable/disable, delete, custom
headers, rate limit), the signing secret (revealed on demand) and its rotation, test events, the message
log with filters and lookup by id, a message's attempts, resend, and recovery of failed messages (counted
before anything is resent).

Every page calls the webhook API (``/api/v1/webhooks``) with the user's token: members read, owners and
admins change (the API refuses the others; the pages hide what they may not do). Another organisation's ids
are a 404 from the API, shown as such.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from aiohttp import web

from ..client import ApiProblem
from ..web import Console, Section, console_of, form, managers_only, redirect, signed_in
from .pagekit import form_time, ident, local_input, pretty, query_of, shown_time

SERVICE = "webhook"
MESSAGE_STATUSES = ("pending", "sending", "succeeded", "failed")
MAX_CUSTOM_HEADERS = 20
_HEADER_LINE = re.compile(r"^\s*([^:\s]+)\s*:\s*(.*?)\s*$")


async def _event_types(request: web.Request) -> list[dict[str, Any]]:
    """The catalogue's public types (webhook ``GET /event-types``)."""
    answer = await console_of(request).client.call(request, SERVICE, "GET", "/event-types")
    return list(answer.get("items", []))


def _parse_headers(text: str) -> dict[str, str]:
    """``Name: value`` lines → a dict (blank lines skipped).

    :raises ValueError: a line without ``:`` or too many headers.
    """
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _HEADER_LINE.match(line)
        if match is None:
            raise ValueError(f"headers: line {number} is not 'Name: value'")
        headers[match[1]] = match[2]
    if len(headers) > MAX_CUSTOM_HEADERS:
        raise ValueError(f"headers: at most {MAX_CUSTOM_HEADERS}")
    return headers


async def _endpoint_body(request: web.Request) -> tuple[dict[str, Any], dict[str, str]]:
    """The endpoint form as an API body (``event_types`` from the picker's checkboxes plus the free field),
    and the raw fields to show again. Raises ``ValueError`` for what the API cannot be asked."""
    data = await request.post()
    picked = [str(v) for v in data.getall("event_types", []) if isinstance(v, str)]
    fields = await form(request)
    extra = [t.strip() for t in re.split(r"[,\s]+", fields.get("other_types", "")) if t.strip()]
    body: dict[str, Any] = {
        "url": fields.get("url", "").strip(),
        "description": fields.get("description", "").strip(),
        "event_types": sorted(set(picked + extra)),
        "headers": _parse_headers(fields.get("headers", "")),
    }
    rate = fields.get("rate_limit", "").strip()
    if rate:
        if not rate.isdigit():
            raise ValueError("rate_limit: a whole number of messages per second, or empty for no limit")
        body["rate_limit"] = int(rate)
    else:
        body["rate_limit"] = None
    concurrency = fields.get("concurrency", "").strip()
    if concurrency:
        if not concurrency.isdigit():
            raise ValueError("concurrency: a whole number from 1 to 64")
        body["concurrency"] = int(concurrency)
    fields["picked"] = ",".join(body["event_types"])
    return body, fields


def _form_values(endpoint: dict[str, Any] | None) -> dict[str, str]:
    if endpoint is None:
        return {"url": "", "description": "", "headers": "", "rate_limit": "", "concurrency": "", "picked": ""}
    return {
        "url": endpoint["url"],
        "description": endpoint.get("description", ""),
        "headers": "\n".join(f"{k}: {v}" for k, v in endpoint.get("headers", {}).items()),
        "rate_limit": str(endpoint["rate_limit"]) if endpoint.get("rate_limit") else "",
        "concurrency": str(endpoint.get("concurrency") or ""),
        "picked": ",".join(endpoint.get("event_types", [])),
    }


def _render_form(
    request: web.Request,
    *,
    endpoint: dict[str, Any] | None,
    types: list[dict[str, Any]],
    values: dict[str, str],
    error: str = "",
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    picked = {t for t in values.get("picked", "").split(",") if t}
    known = {t["name"] for t in types}
    values = defaultdict(str, {**values, "other_types": values.get("other_types") or ", ".join(sorted(picked - known))})
    return console_of(request).render(
        request,
        "webhooks/endpoint_form.html",
        status=status,
        endpoint=endpoint,
        types=types,
        picked=picked,
        values=values,
        error=error,
        errors=defaultdict(str, errors or {}),
    )


@signed_in
async def endpoints_page(request: web.Request) -> web.StreamResponse:
    """``GET /webhooks``: the organisation's endpoints, newest first (cursor paging)."""
    console = console_of(request)
    cursor = request.query.get("cursor", "")[:256]
    answer = await console.client.call(request, SERVICE, "GET", "/endpoints", params={"limit": 50, "cursor": cursor})
    return console.render(
        request, "webhooks/endpoints.html", endpoints=answer["items"], next_cursor=answer.get("next_cursor")
    )


@managers_only
async def new_endpoint_page(request: web.Request) -> web.StreamResponse:
    return _render_form(request, endpoint=None, types=await _event_types(request), values=_form_values(None))


@managers_only
async def create_endpoint(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    types = await _event_types(request)
    try:
        body, values = await _endpoint_body(request)
    except ValueError as exc:
        fields = await form(request)
        return _render_form(request, endpoint=None, types=types, values=fields, error=str(exc), status=422)
    if body["rate_limit"] is None:
        del body["rate_limit"]
    try:
        created = await console.client.call(request, SERVICE, "POST", "/endpoints", json_body=body)
    except ApiProblem as problem:
        if problem.status >= 500:
            raise
        return _render_form(
            request,
            endpoint=None,
            types=types,
            values=values,
            error=problem.message,
            errors=problem.field_errors(),
            status=problem.status,
        )
    request["session"].flash_message("ok", "The endpoint is registered.")
    return redirect(request, f"/webhooks/endpoints/{created['id']}")


@signed_in
async def endpoint_page(request: web.Request) -> web.StreamResponse:
    """One endpoint, its recent messages and (managers) its actions."""
    console = console_of(request)
    endpoint_id = ident(request, "endpoint_id")
    endpoint = await console.client.call(request, SERVICE, "GET", f"/endpoints/{endpoint_id}")
    recent = await console.client.call(
        request, SERVICE, "GET", "/messages", params={"endpoint_id": endpoint_id, "limit": 10}
    )
    return console.render(
        request,
        "webhooks/endpoint.html",
        endpoint=endpoint,
        messages=recent["items"],
        recover_since=local_input(request.query.get("since")),
    )


@managers_only
async def edit_endpoint_page(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    endpoint_id = ident(request, "endpoint_id")
    endpoint = await console.client.call(request, SERVICE, "GET", f"/endpoints/{endpoint_id}")
    return _render_form(request, endpoint=endpoint, types=await _event_types(request), values=_form_values(endpoint))


@managers_only
async def update_endpoint(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    endpoint_id = ident(request, "endpoint_id")
    endpoint = await console.client.call(request, SERVICE, "GET", f"/endpoints/{endpoint_id}")
    types = await _event_types(request)
    try:
        body, values = await _endpoint_body(request)
    except ValueError as exc:
        fields = await form(request)
        return _render_form(request, endpoint=endpoint, types=types, values=fields, error=str(exc), status=422)
    try:
        await console.client.call(request, SERVICE, "PATCH", f"/endpoints/{endpoint_id}", json_body=body)
    except ApiProblem as problem:
        if problem.status >= 500:
            raise
        return _render_form(
            request,
            endpoint=endpoint,
            types=types,
            values=values,
            error=problem.message,
            errors=problem.field_errors(),
            status=problem.status,
        )
    request["session"].flash_message("ok", "The endpoint is saved.")
    return redirect(request, f"/webhooks/endpoints/{endpoint_id}")


async def _act(request: web.Request, call: Any, ok: str, back: str) -> web.StreamResponse:
    """Run one change; its problem (4xx) is shown as a flash on ``back``, success as ``ok``."""
    try:
        await call
    except ApiProblem as problem:
        if problem.status >= 500 or problem.status == 404:
            raise
        request["session"].flash_message("error", problem.message)
    else:
        request["session"].flash_message("ok", ok)
    request["session_changed"] = True
    return redirect(request, back)


@managers_only
async def set_enabled(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    endpoint_id = ident(request, "endpoint_id")
    enabled = request.match_info["action"] == "enable"
    call = console.client.call(request, SERVICE, "PATCH", f"/endpoints/{endpoint_id}", json_body={"enabled": enabled})
    text = "The endpoint is enabled." if enabled else "The endpoint is disabled: nothing is sent to it."
    return await _act(request, call, text, f"/webhooks/endpoints/{endpoint_id}")


@managers_only
async def delete_endpoint(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    endpoint_id = ident(request, "endpoint_id")
    await console.client.call(request, SERVICE, "DELETE", f"/endpoints/{endpoint_id}")
    request["session"].flash_message("ok", "The endpoint is deleted; its pending messages failed.")
    return redirect(request, "/webhooks")


@managers_only
async def secret_page(request: web.Request) -> web.StreamResponse:
    """The signing secret, only when asked for (a fragment for htmx, a page otherwise)."""
    console = console_of(request)
    endpoint_id = ident(request, "endpoint_id")
    secret = await console.client.call(request, SERVICE, "GET", f"/endpoints/{endpoint_id}/secret")
    return console.render(request, "webhooks/secret.html", endpoint_id=endpoint_id, secret=secret)


@managers_only
async def rotate_secret(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    endpoint_id = ident(request, "endpoint_id")
    fields = await form(request)
    body: dict[str, Any] = {}
    grace = fields.get("grace_hours", "").strip()
    if grace:
        try:
            body["grace_seconds"] = float(grace) * 3600
        except ValueError:
            request["session"].flash_message("error", "grace_hours: a number of hours")
            return redirect(request, f"/webhooks/endpoints/{endpoint_id}")
    call = console.client.call(request, SERVICE, "POST", f"/endpoints/{endpoint_id}/secret/rotate", json_body=body)
    return await _act(
        request,
        call,
        "A new secret signs from now on; the old one signs alongside it for the grace period.",
        f"/webhooks/endpoints/{endpoint_id}",
    )


@managers_only
async def send_test(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    endpoint_id = ident(request, "endpoint_id")
    try:
        sent = await console.client.call(request, SERVICE, "POST", f"/endpoints/{endpoint_id}/test")
    except ApiProblem as problem:
        if problem.status >= 500 or problem.status == 404:
            raise
        request["session"].flash_message("error", problem.message)
        return redirect(request, f"/webhooks/endpoints/{endpoint_id}")
    request["session"].flash_message("ok", "A webhook.test event is on its way.")
    return redirect(request, f"/webhooks/messages/{sent['message_id']}")


@managers_only
async def recover(request: web.Request) -> web.StreamResponse:
    """Recover failed messages since a time: first a dry run that shows how many, then (``confirm``) the
    resend itself."""
    console = console_of(request)
    endpoint_id = ident(request, "endpoint_id")
    fields = await form(request)
    back = f"/webhooks/endpoints/{endpoint_id}"
    try:
        since = form_time(fields.get("since", ""), "since")
        until = form_time(fields.get("until", ""), "until")
    except ValueError as exc:
        request["session"].flash_message("error", str(exc))
        return redirect(request, back)
    if since is None:
        request["session"].flash_message("error", "since: give the time from which to recover failed messages")
        return redirect(request, back)
    body: dict[str, Any] = {"since": since}
    if until:
        body["until"] = until
    confirmed = fields.get("confirm") == "yes"
    answer = await console.client.call(
        request, SERVICE, "POST", f"/endpoints/{endpoint_id}/recover", json_body={**body, "dry_run": not confirmed}
    )
    if confirmed:
        request["session"].flash_message("ok", f"{answer['messages']} failed messages are being sent again.")
        return redirect(request, back)
    endpoint = await console.client.call(request, SERVICE, "GET", f"/endpoints/{endpoint_id}")
    return console.render(
        request,
        "webhooks/recover.html",
        endpoint=endpoint,
        count=answer["messages"],
        since=since,
        until=until or "",
    )


def _message_filters(request: web.Request) -> tuple[dict[str, str], dict[str, Any], str]:
    """The log's filters as shown in the form, as API parameters, and a readable fault (or "")."""
    shown = query_of(request, "endpoint_id", "status", "event_type", "http_status", "since", "until", "cursor")
    params: dict[str, Any] = {"limit": 50}
    fault = ""
    for name in ("endpoint_id", "event_type", "cursor"):
        params[name] = shown[name]
    if shown["status"] in MESSAGE_STATUSES:
        params["status"] = shown["status"]
    if shown["http_status"]:
        if shown["http_status"].isdigit() and 100 <= int(shown["http_status"]) <= 599:
            params["http_status"] = int(shown["http_status"])
        else:
            fault = "HTTP status: a number from 100 to 599"
    for name in ("since", "until"):
        try:
            params[name] = form_time(shown[name], name)
        except ValueError as exc:
            fault = str(exc)
    return shown, params, fault


@signed_in
async def messages_page(request: web.Request) -> web.StreamResponse:
    """``GET /webhooks/messages``: the log, newest first, with filters; ``?id=`` looks a message up."""
    console = console_of(request)
    wanted = request.query.get("id", "").strip()
    if wanted:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", wanted):
            request["session"].flash_message("error", "That is not a message id (msg_…).")
            return redirect(request, "/webhooks/messages")
        return redirect(request, f"/webhooks/messages/{wanted}")
    shown, params, fault = _message_filters(request)
    items: list[dict[str, Any]] = []
    next_cursor = None
    if not fault:
        try:
            answer = await console.client.call(request, SERVICE, "GET", "/messages", params=params)
        except ApiProblem as problem:
            if problem.status != 422:
                raise
            fault = problem.message
        else:
            items, next_cursor = answer["items"], answer.get("next_cursor")
    endpoints = await console.client.call(request, SERVICE, "GET", "/endpoints", params={"limit": 200})
    return console.render(
        request,
        "webhooks/messages.html",
        messages=items,
        next_cursor=next_cursor,
        filters=shown,
        fault=fault,
        statuses=MESSAGE_STATUSES,
        endpoints=endpoints["items"],
        more_query={k: v for k, v in shown.items() if v and k != "cursor"},
    )


@signed_in
async def message_page(request: web.Request) -> web.StreamResponse:
    """One message: its payload and every attempt (request headers, response status, body excerpt,
    duration)."""
    console = console_of(request)
    message_id = ident(request, "message_id")
    message = await console.client.call(request, SERVICE, "GET", f"/messages/{message_id}")
    attempts = await console.client.call(request, SERVICE, "GET", f"/messages/{message_id}/attempts")
    return console.render(
        request,
        "webhooks/message.html",
        message=message,
        attempts=attempts["items"],
        payload=pretty(message.get("payload")) if message.get("payload") is not None else "",
    )


@managers_only
async def resend(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    message_id = ident(request, "message_id")
    call = console.client.call(request, SERVICE, "POST", f"/messages/{message_id}/resend")
    return await _act(request, call, "The message is being sent again.", f"/webhooks/messages/{message_id}")


def register(console: Console, router: web.UrlDispatcher) -> None:
    console.env.filters.setdefault("when", shown_time)
    console.section(Section("webhooks", "Webhooks", "/webhooks", SERVICE))
    router.add_get("/webhooks", endpoints_page)
    router.add_get("/webhooks/endpoints/new", new_endpoint_page)
    router.add_post("/webhooks/endpoints", create_endpoint)
    router.add_get("/webhooks/endpoints/{endpoint_id}", endpoint_page)
    router.add_get("/webhooks/endpoints/{endpoint_id}/edit", edit_endpoint_page)
    router.add_post("/webhooks/endpoints/{endpoint_id}/edit", update_endpoint)
    router.add_post("/webhooks/endpoints/{endpoint_id}/{action:enable|disable}", set_enabled)
    router.add_post("/webhooks/endpoints/{endpoint_id}/delete", delete_endpoint)
    router.add_get("/webhooks/endpoints/{endpoint_id}/secret", secret_page)
    router.add_post("/webhooks/endpoints/{endpoint_id}/secret/rotate", rotate_secret)
    router.add_post("/webhooks/endpoints/{endpoint_id}/test", send_test)
    router.add_post("/webhooks/endpoints/{endpoint_id}/recover", recover)
    router.add_get("/webhooks/messages", messages_page)
    router.add_get("/webhooks/messages/{message_id}", message_page)
    router.add_post("/webhooks/messages/{message_id}/resend", resend)
