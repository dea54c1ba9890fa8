"""Two-factor sign-in (TOTP) of the signed-in user: set-up with a QR code, recovery codes shown once, new
recovery codes, turning it off.

The QR code is drawn here, with segno, from the ``otpauth://`` URI auth returns: the console embeds markup
it made itself, never markup from a service (auth's ``qr_svg`` is not used). The set-up page carries the URI
in a hidden field so that a wrong code can show the same QR code again (the browser shows the secret
anyway; auth keeps the pending secret and checks the code against it, so a changed field only changes what
that same browser draws).
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import segno
from aiohttp import web
from markupsafe import Markup

from ..client import ApiProblem
from ..session import Session
from ..web import Console, console_of, form, redirect, signed_in
from .account import FEW_RECOVERY_CODES

OTPAUTH_PREFIX = "otpauth://totp/"
MAX_URI = 1024


def qr_svg(uri: str) -> Markup:
    """An inline SVG QR code of ``uri`` (segno; sized by CSS through its ``viewBox``, no inline style)."""
    svg = segno.make(uri, error="m").svg_inline(
        scale=4, border=2, omitsize=True, title="QR code for your authenticator app"
    )
    return Markup(svg)  # noqa: S704 - segno's own output for a string we checked; nothing from a service


def manual_key(uri: str) -> str:
    """The base32 ``secret`` of an otpauth URI, in groups of four for typing."""
    secret = parse_qs(urlsplit(uri).query).get("secret", [""])[0].upper()
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def _valid_uri(uri: str) -> bool:
    return uri.startswith(OTPAUTH_PREFIX) and len(uri) <= MAX_URI and bool(manual_key(uri))


def _code(fields: dict[str, str]) -> str:
    return fields.get("code", "").replace(" ", "").strip()


def downloadable(codes: list[str], email: str) -> str:
    """A ``data:`` URL of the recovery codes as a text file (for ``<a download>``)."""
    text = f"NovaPulse recovery codes for {email}\nEach code works once.\n\n" + "\n".join(codes) + "\n"
    return "data:text/plain;charset=utf-8," + quote(text, safe="")


async def _status(request: web.Request) -> dict[str, Any]:
    """auth ``GET /mfa`` (``{enabled, recovery_codes_remaining}``); the session follows it."""
    status: dict[str, Any] = await console_of(request).client.call(request, "auth", "GET", "/mfa")
    _set_enabled(request, bool(status["enabled"]))
    return status


def _set_enabled(request: web.Request, enabled: bool) -> None:
    session: Session = request["session"]
    if session.mfa_enabled != enabled or (session.operator and not enabled):
        session.mfa_enabled = enabled
        session.operator = session.operator and enabled  # operators need MFA (see account.establish)
        request["session_changed"] = True


def _render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    return console_of(request).render(request, template, status=status, few=FEW_RECOVERY_CODES, **context)


@signed_in
async def mfa_home(request: web.Request) -> web.StreamResponse:
    """On: recovery codes left (warning when few), new codes, turn off. Off: start set-up."""
    return _render(request, "account/two_factor.html", mfa=await _status(request), errors={}, error="")


@signed_in
async def mfa_setup(request: web.Request) -> web.StreamResponse:
    """auth ``POST /mfa/setup``: a QR code and the key to type, and the form for the first code."""
    console = console_of(request)
    try:
        answer = await console.client.call(request, "auth", "POST", "/mfa/setup")
    except ApiProblem as problem:
        if problem.status != 409:
            raise
        request["session"].flash_message("warning", "Two-factor sign-in is already on.")
        _set_enabled(request, True)
        return redirect(request, "/account/mfa")
    uri = str(answer["otpauth_uri"])
    if not _valid_uri(uri):
        raise ApiProblem(502, "Bad answer", "The auth service answered a set-up this console cannot show.")
    return _setup_page(request, uri, error="")


def _setup_page(request: web.Request, uri: str, *, error: str, status: int = 200) -> web.Response:
    return _render(
        request,
        "account/two_factor_setup.html",
        status=status,
        uri=uri,
        qr=qr_svg(uri),
        key=manual_key(uri),
        error=error,
    )


@signed_in
async def mfa_enable(request: web.Request) -> web.StreamResponse:
    """auth ``POST /mfa/enable`` with the first code: MFA on, the recovery codes shown once."""
    console = console_of(request)
    fields = await form(request)
    uri = fields.get("otpauth_uri", "")
    if not _valid_uri(uri):
        return redirect(request, "/account/mfa")
    try:
        answer = await console.client.call(request, "auth", "POST", "/mfa/enable", json_body={"code": _code(fields)})
    except ApiProblem as problem:
        if problem.status == 409:  # the set-up expired (10 minutes) or MFA is on already
            request["session"].flash_message("warning", "The set-up expired or was finished elsewhere; start again.")
            return redirect(request, "/account/mfa")
        if problem.status in (400, 422):
            return _setup_page(
                request, uri, error="That code is not right; enter the current one.", status=problem.status
            )
        raise
    _set_enabled(request, True)
    request["session"].flash_message("ok", "Two-factor sign-in is on.")
    return _codes_page(request, list(answer["recovery_codes"]), first=True)


def _codes_page(request: web.Request, codes: list[str], *, first: bool) -> web.Response:
    session: Session = request["session"]
    return _render(
        request, "account/recovery_codes.html", codes=codes, download=downloadable(codes, session.email), first=first
    )


@signed_in
async def mfa_recovery_codes(request: web.Request) -> web.StreamResponse:
    """auth ``POST /mfa/recovery-codes`` with a current code: ten new codes, the old ones stop working."""
    console = console_of(request)
    fields = await form(request)
    try:
        answer = await console.client.call(
            request, "auth", "POST", "/mfa/recovery-codes", json_body={"code": _code(fields)}
        )
    except ApiProblem as problem:
        if problem.status in (400, 409, 422):
            return await _home_with_error(request, "regen", "That code is not right.", problem.status)
        raise
    return _codes_page(request, list(answer["recovery_codes"]), first=False)


@signed_in
async def mfa_disable(request: web.Request) -> web.StreamResponse:
    """auth ``POST /mfa/disable`` with the password and a current code."""
    console = console_of(request)
    fields = await form(request)
    body = {"password": fields.get("password", ""), "code": _code(fields)}
    try:
        await console.client.call(request, "auth", "POST", "/mfa/disable", json_body=body)
    except ApiProblem as problem:
        if problem.status in (400, 422):
            return await _home_with_error(request, "disable", "The password or the code is not right.", problem.status)
        if problem.status != 409:
            raise
    _set_enabled(request, False)
    request["session"].flash_message("ok", "Two-factor sign-in is off.")
    return redirect(request, "/account/mfa")


async def _home_with_error(request: web.Request, form_name: str, message: str, status: int) -> web.Response:
    mfa: dict[str, Any] = {"enabled": request["session"].mfa_enabled, "recovery_codes_remaining": 0}
    with contextlib.suppress(ApiProblem):
        mfa = await _status(request)
    return _render(request, "account/two_factor.html", status=status, mfa=mfa, errors={form_name: message}, error="")


def register(console: Console, router: web.UrlDispatcher) -> None:
    router.add_get("/account/mfa", mfa_home)
    router.add_post("/account/mfa/setup", mfa_setup)
    router.add_post("/account/mfa/enable", mfa_enable)
    router.add_post("/account/mfa/recovery-codes", mfa_recovery_codes)
    router.add_post("/account/mfa/disable", mfa_disable)
