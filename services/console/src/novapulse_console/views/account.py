"""Sign-in (password, then the MFA step with a code or a recovery code), sign-out, registration, and the
``/account`` page (profile, sign-in method, password change)."""

from __future__ import annotations

import contextlib
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ..client import ApiProblem
from ..session import Session
from ..web import Console, console_of, form, redirect, safe_next, signed_in

FEW_RECOVERY_CODES = 3
"""At or below this many unused recovery codes the console warns (after sign-in and on ``/account/mfa``)."""


async def establish(request: web.Request, tokens: dict[str, Any]) -> None:
    """Turn a token pair into a signed-in session: a new CSRF token (no fixation across sign-in) and the
    user's profile from auth ``GET /me``. The user is an operator only when their address is listed in
    ``CONSOLE_OPERATOR_EMAILS`` *and* their account has MFA on (operators see every tenant's events). With
    MFA on, auth ``GET /mfa`` tells how many recovery codes are left: a warning at
    :data:`FEW_RECOVERY_CODES` or fewer."""
    console = console_of(request)
    old: Session = request["session"]
    session = Session.anonymous()
    session.access_token = tokens["access_token"]
    session.refresh_token = tokens["refresh_token"]
    session.access_expires_at = time.time() + float(tokens.get("expires_in", 0))
    session.flash = old.flash
    request["session"] = session
    request["session_changed"] = True
    me = await console.client.call(request, "auth", "GET", "/me")
    user, org = me["user"], me["organization"]
    session.user_id, session.email, session.name = user["id"], user["email"], user["name"]
    session.role, session.mfa_enabled = user["role"], bool(user["mfa_enabled"])
    session.org_id, session.org_name = org["id"], org["name"]
    session.operator = session.mfa_enabled and user["email"].lower() in console.settings.operator_emails()
    if session.mfa_enabled:
        with contextlib.suppress(ApiProblem):  # only a warning: the sign-in stands without it
            status = await console.client.call(request, "auth", "GET", "/mfa")
            warn_if_few_codes(session, int(status.get("recovery_codes_remaining", 0)))
    elif user["email"].lower() in console.settings.operator_emails():
        session.flash_message("warning", "Operator pages need two-factor sign-in: turn it on, then sign in again.")


def warn_if_few_codes(session: Session, remaining: int) -> None:
    """A flash warning when ``remaining`` recovery codes are :data:`FEW_RECOVERY_CODES` or fewer."""
    if remaining <= FEW_RECOVERY_CODES:
        noun = "recovery code is" if remaining == 1 else "recovery codes are"
        session.flash_message("warning", f"Only {remaining} {noun} left: make new ones on the two-factor page.")


async def sign_in_page(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    if request["session"].signed_in:
        return redirect(request, safe_next(request.query.get("next")))
    return console.render(
        request, "account/sign_in.html", next=safe_next(request.query.get("next")), email="", error=""
    )


async def sign_in(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    fields = await form(request)
    email, password = fields.get("email", "").strip(), fields.get("password", "")
    nxt = safe_next(fields.get("next"))
    try:
        answer = await console.client.call(
            request, "auth", "POST", "/login", json_body={"email": email, "password": password}, anonymous=True
        )
    except ApiProblem as problem:
        message = "Wrong e-mail address or password." if problem.status == 401 else problem.message
        return console.render(
            request, "account/sign_in.html", status=problem.status, next=nxt, email=email, error=message
        )
    if answer.get("mfa_required"):
        session: Session = request["session"]
        session.mfa_token = answer["mfa_token"]
        request["session_changed"] = True
        return redirect(request, f"/sign-in/mfa?next={quote(nxt, safe='/')}")
    await establish(request, answer)
    return redirect(request, nxt)


async def mfa_page(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    if not request["session"].mfa_token:
        return redirect(request, "/sign-in")
    return console.render(
        request, "account/mfa.html", next=safe_next(request.query.get("next")), error="", recovery=False
    )


async def mfa_verify(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    session: Session = request["session"]
    fields = await form(request)
    nxt = safe_next(fields.get("next"))
    if not session.mfa_token:
        return redirect(request, "/sign-in")
    recovery = bool(fields.get("recovery_code"))
    body: dict[str, str] = {"mfa_token": session.mfa_token}
    if recovery:
        body["recovery_code"] = fields["recovery_code"].strip()
    else:
        body["code"] = fields.get("code", "").replace(" ", "").strip()
    try:
        answer = await console.client.call(request, "auth", "POST", "/mfa/verify", json_body=body, anonymous=True)
    except ApiProblem as problem:
        if problem.status == 401 and "expired" in problem.message.lower():
            session.mfa_token = ""
            session.flash_message("warning", "The sign-in step expired; enter your password again.")
            return redirect(request, "/sign-in")
        message = "That code is not right." if problem.status in (400, 401, 422) else problem.message
        return console.render(
            request, "account/mfa.html", status=problem.status, next=nxt, error=message, recovery=recovery
        )
    session.mfa_token = ""
    await establish(request, answer)
    return redirect(request, nxt)


async def sign_out(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    session: Session = request["session"]
    if session.signed_in:
        # the cookie goes either way; an unreachable auth service leaves the refresh token to its expiry
        with contextlib.suppress(ApiProblem):
            await console.client.call(request, "auth", "POST", "/logout")
    fresh = Session.anonymous()
    fresh.flash_message("ok", "You are signed out.")
    request["session"] = fresh
    request["session_changed"] = True
    return redirect(request, "/sign-in")


async def register_page(request: web.Request) -> web.StreamResponse:
    return console_of(request).render(request, "account/register.html", values={}, errors={}, error="", sent=False)


async def register_account(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    fields = await form(request)
    body = {k: fields.get(k, "").strip() for k in ("email", "name", "organization")}
    body["password"] = fields.get("password", "")
    try:
        answer = await console.client.call(request, "auth", "POST", "/register", json_body=body, anonymous=True)
    except ApiProblem as problem:
        values = {k: v for k, v in body.items() if k != "password"}
        return console.render(
            request,
            "account/register.html",
            status=problem.status,
            values=values,
            errors=problem.field_errors(),
            error=problem.message,
            sent=False,
        )
    if isinstance(answer, dict) and "user" in answer and "tokens" not in answer:
        # verification off (REGISTRATION_EMAIL_VERIFICATION=false): the account exists; sign in
        request["session"].flash_message("ok", "Your organisation is ready: sign in.")
        return redirect(request, "/sign-in")
    return console.render(
        request, "account/register.html", values={"email": body["email"]}, errors={}, error="", sent=True
    )


async def verify_page(request: web.Request) -> web.StreamResponse:
    token = request.query.get("token", "")
    return console_of(request).render(request, "account/verify.html", token=token[:512], error="")


async def verify(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    fields = await form(request)
    token = fields.get("token", "")
    try:
        answer = await console.client.call(
            request,
            "auth",
            "POST",
            "/register/verify",
            json_body={"token": token, "password": fields.get("password", "")},
            anonymous=True,
        )
    except ApiProblem as problem:
        return console.render(
            request, "account/verify.html", status=problem.status, token=token[:512], error=problem.message
        )
    await establish(request, answer["tokens"])
    request["session"].flash_message("ok", "Welcome! Your organisation is ready. Turn on two-factor sign-in next.")
    return redirect(request, "/")


@signed_in
async def account_page(request: web.Request) -> web.StreamResponse:
    """Profile (auth ``GET /me``), sign-in method and the password form."""
    console = console_of(request)
    me = await console.client.call(request, "auth", "GET", "/me")
    return _account(request, me, errors={}, error="")


def _account(
    request: web.Request, me: dict[str, Any], *, errors: dict[str, str], error: str, status: int = 200
) -> web.Response:
    session: Session = request["session"]
    if bool(me["user"]["mfa_enabled"]) != session.mfa_enabled:  # changed elsewhere (an admin's reset)
        session.mfa_enabled = bool(me["user"]["mfa_enabled"])
        session.operator = session.operator and session.mfa_enabled
        request["session_changed"] = True
    return console_of(request).render(request, "account/account.html", status=status, me=me, errors=errors, error=error)


@signed_in
async def change_password(request: web.Request) -> web.StreamResponse:
    """auth ``POST /password``: the other sessions end; this one stays."""
    console = console_of(request)
    fields = await form(request)
    errors: dict[str, str] = {}
    if fields.get("new_password", "") != fields.get("confirm_password", ""):
        errors["confirm_password"] = "The two new passwords differ."  # noqa: S105 - a message
    else:
        body = {"current_password": fields.get("current_password", ""), "new_password": fields.get("new_password", "")}
        try:
            await console.client.call(request, "auth", "POST", "/password", json_body=body)
        except ApiProblem as problem:
            if problem.status >= 500 or problem.status == 429:
                raise
            errors = problem.field_errors()
            if "password" in errors:  # the password policy names the new password "password"
                errors["new_password"] = errors.pop("password")
            if problem.status == 400:
                errors["current_password"] = "That is not your current password."  # noqa: S105 - a message
            elif not errors:
                errors["new_password"] = problem.message
    if errors:
        me = await console.client.call(request, "auth", "GET", "/me")
        return _account(request, me, errors=errors, error="The password was not changed.", status=422)
    request["session"].flash_message("ok", "Your password is changed; your other sessions have been signed out.")
    return redirect(request, "/account")


def register(console: Console, router: web.UrlDispatcher) -> None:
    router.add_get("/account", account_page)
    router.add_post("/account/password", change_password)
    router.add_get("/sign-in", sign_in_page)
    router.add_post("/sign-in", sign_in)
    router.add_get("/sign-in/mfa", mfa_page)
    router.add_post("/sign-in/mfa", mfa_verify)
    router.add_post("/sign-out", sign_out)
    router.add_get("/register", register_page)
    router.add_post("/register", register_account)
    router.add_get("/register/verify", verify_page)
    router.add_post("/register/verify", verify)
