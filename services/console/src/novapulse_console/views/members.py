"""Members and invites of the organisation (auth's API), and the page the invite mail links to.

Everyone signed in sees the member list (auth lets every member read it); owners and admins also see the
pending invites and may invite, revoke, disable and reset MFA; only the owner changes roles. Controls a role
may not use are not shown — auth refuses them anyway (403/409), and such a refusal is shown as a message.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from aiohttp import web

from ..client import ApiProblem
from ..session import Session
from ..web import Console, Section, console_of, form, redirect, signed_in
from .account import establish

ID = re.compile(r"^[0-9a-f]{32}$")
ROLES = ("member", "admin")
"""Roles an invite or a role change may give (``owner`` is fixed)."""
PAGE_SIZE = 50
INVITE_ACCEPT_PATH = "/invites/accept"
"""The page the invite mail links to (the notification service's ``INVITE_ACCEPT_PATH``, auth's
``INVITE_ACCEPT_URL``); ``/invite/accept``, their built-in default, shows the same page."""
INVITE_ACCEPT_ALIAS = "/invite/accept"


def _id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not ID.fullmatch(value):
        raise web.HTTPNotFound(reason="Not found", text="There is no such member or invite.")
    return value


def can_disable(session: Session, member: dict[str, Any]) -> bool:
    """Whether ``session``'s user may disable (or reset the MFA of) ``member``: the owner anyone but
    themselves, an admin only members."""
    if member["id"] == session.user_id or member["role"] == "owner" or member["status"] != "active":
        return False
    return session.role == "owner" or (session.role == "admin" and member["role"] == "member")


def can_change_role(session: Session, member: dict[str, Any]) -> bool:
    return session.role == "owner" and member["role"] != "owner" and member["status"] == "active"


@signed_in
async def members_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def _page(
    request: web.Request,
    *,
    invite: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    console = console_of(request)
    session: Session = request["session"]
    cursor = request.query.get("cursor", "")[:200]
    members = await console.client.call(
        request, "auth", "GET", "/members", params={"limit": PAGE_SIZE, "cursor": cursor}
    )
    invites: list[dict[str, Any]] = []
    if session.manager:
        found = await console.client.call(
            request, "auth", "GET", "/invites", params={"status": "pending", "limit": 100}
        )
        invites = found["items"]
    return console.render(
        request,
        "members/list.html",
        status=status,
        members=members["items"],
        next_cursor=members.get("next_cursor"),
        first_page=not cursor,
        invites=invites,
        roles=ROLES,
        invite=invite or {"email": "", "role": "member"},
        errors=errors or {},
        can_disable=lambda m: can_disable(session, m),
        can_change_role=lambda m: can_change_role(session, m),
    )


async def _act(request: web.Request, method: str, path: str, body: Any, done: str) -> web.StreamResponse:
    """Call auth and come back to the list with ``done`` or auth's reason."""
    session: Session = request["session"]
    if not session.manager:
        raise web.HTTPForbidden(reason="Forbidden", text="Only the organisation's owners and admins may do this.")
    try:
        await console_of(request).client.call(request, "auth", method, path, json_body=body)
    except ApiProblem as problem:
        if problem.status >= 500:
            raise
        session.flash_message("error", problem.message)
    else:
        session.flash_message("ok", done)
    return redirect(request, "/members")


@signed_in
async def invite(request: web.Request) -> web.StreamResponse:
    """auth ``POST /invites``: the invite mail goes out with a link to :data:`INVITE_ACCEPT_PATH`."""
    session: Session = request["session"]
    if not session.manager:
        raise web.HTTPForbidden(reason="Forbidden", text="Only the organisation's owners and admins may invite.")
    fields = await form(request)
    body = {"email": fields.get("email", "").strip(), "role": fields.get("role", "member")}
    try:
        await console_of(request).client.call(request, "auth", "POST", "/invites", json_body=body)
    except ApiProblem as problem:
        if problem.status >= 500 or problem.status == 401:
            raise
        errors = problem.field_errors() or {"email": problem.message}
        return await _page(request, invite=body, errors=errors, status=problem.status)
    session.flash_message("ok", f"Invitation sent to {body['email']}.")
    return redirect(request, "/members")


@signed_in
async def revoke_invite(request: web.Request) -> web.StreamResponse:
    return await _act(request, "DELETE", f"/invites/{_id(request, 'invite_id')}", None, "The invitation is revoked.")


@signed_in
async def change_role(request: web.Request) -> web.StreamResponse:
    role = (await form(request)).get("role", "")
    if role not in ROLES:
        request["session"].flash_message("error", "Choose member or admin.")
        return redirect(request, "/members")
    return await _act(
        request, "PATCH", f"/members/{_id(request, 'user_id')}", {"role": role}, f"The role is now {role}."
    )


@signed_in
async def disable(request: web.Request) -> web.StreamResponse:
    path = f"/members/{_id(request, 'user_id')}/disable"
    return await _act(request, "POST", path, None, "The member is disabled and signed out everywhere.")


@signed_in
async def reset_mfa(request: web.Request) -> web.StreamResponse:
    path = f"/members/{_id(request, 'user_id')}/mfa/reset"
    return await _act(request, "POST", path, None, "Two-factor sign-in is reset: the member sets it up again.")


# --- accepting an invite (anonymous) -----------------------------------------------------------------------


async def accept_page(request: web.Request) -> web.StreamResponse:
    """The invite mail's link (``?token=``): choose a name and a password."""
    token = request.query.get("token", "")[:256]
    return console_of(request).render(
        request,
        "members/accept.html",
        action=INVITE_ACCEPT_PATH,
        token=token,
        name="",
        errors={},
        error="",
    )


async def accept(request: web.Request) -> web.StreamResponse:
    """auth ``POST /invites/accept``, then signed in with the new password (auth ``POST /login``)."""
    console = console_of(request)
    fields = await form(request)
    token, name, password = fields.get("token", "")[:256], fields.get("name", "").strip(), fields.get("password", "")
    errors: dict[str, str] = {}
    if password != fields.get("confirm_password", ""):
        errors["confirm_password"] = "The two passwords differ."  # noqa: S105 - a message
    else:
        try:
            answer = await console.client.call(
                request,
                "auth",
                "POST",
                "/invites/accept",
                json_body={"token": token, "name": name, "password": password},
                anonymous=True,
            )
        except ApiProblem as problem:
            if problem.status >= 500 or problem.status == 429:
                raise
            errors = problem.field_errors()
            message = problem.message
            if problem.status == 400:
                message = "This invitation is not valid any more (used, revoked or expired): ask for a new one."
            return console.render(
                request,
                "members/accept.html",
                action=INVITE_ACCEPT_PATH,
                status=problem.status,
                token=token,
                name=name,
                errors=errors,
                error=message,
            )
    if errors:
        return console.render(
            request,
            "members/accept.html",
            action=INVITE_ACCEPT_PATH,
            status=422,
            token=token,
            name=name,
            errors=errors,
            error="",
        )
    email, org = answer["user"]["email"], answer["organization"]["name"]
    with contextlib.suppress(ApiProblem, KeyError):
        tokens = await console.client.call(
            request, "auth", "POST", "/login", json_body={"email": email, "password": password}, anonymous=True
        )
        if "access_token" in tokens:
            await establish(request, tokens)
            request["session"].flash_message("ok", f"Welcome to {org}!")
            return redirect(request, "/")
    request["session"].flash_message("ok", f"You joined {org}: sign in.")
    return redirect(request, "/sign-in")


def register(console: Console, router: web.UrlDispatcher) -> None:
    console.section(Section("members", "Members", "/members", "auth"))
    router.add_get("/members", members_page)
    router.add_post("/members/invites", invite)
    router.add_post("/members/invites/{invite_id}/revoke", revoke_invite)
    router.add_post("/members/{user_id}/role", change_role)
    router.add_post("/members/{user_id}/disable", disable)
    router.add_post("/members/{user_id}/mfa-reset", reset_mfa)
    router.add_get(INVITE_ACCEPT_PATH, accept_page)
    router.add_post(INVITE_ACCEPT_PATH, accept)
    router.add_get(INVITE_ACCEPT_ALIAS, accept_page)
