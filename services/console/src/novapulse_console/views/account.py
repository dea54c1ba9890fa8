"""Sign-in (password, then the MFA step with a code or a recovery code), sign-out and registration."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from aiohttp import web

from ..client import ApiProblem
from ..session import Session
from ..web import Console, console_of, form, redirect, safe_next


async def establish(request: web.Request, tokens: dict[str, Any]) -> None:
    """Turn a token pair into a signed-in session: a new CSRF token (no fixation across sign-in) and the
    user's profile from auth ``GET /me``."""
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
    session.operator = user["email"].lower() in console.settings.operator_emails()


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
        return redirect(request, f"/sign-in/mfa?next={nxt}")
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
            request["session_changed"] = True
            return redirect(request, "/sign-in")
        message = "That code is not right." if problem.status in (400, 401, 422) else problem.message
        return console.render(
            request, "account/mfa.html", status=problem.status, next=nxt, error=message, recovery=recovery
        )
    session.mfa_token = ""
    await establish(request, answer)
    remaining = answer.get("recovery_codes_remaining")
    if isinstance(remaining, int) and remaining <= 3:
        request["session"].flash_message("warning", f"Only {remaining} recovery codes are left: regenerate them.")
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


def register(console: Console, router: web.UrlDispatcher) -> None:
    router.add_get("/sign-in", sign_in_page)
    router.add_post("/sign-in", sign_in)
    router.add_get("/sign-in/mfa", mfa_page)
    router.add_post("/sign-in/mfa", mfa_verify)
    router.add_post("/sign-out", sign_out)
    router.add_get("/register", register_page)
    router.add_post("/register", register_account)
    router.add_get("/register/verify", verify_page)
    router.add_post("/register/verify", verify)
