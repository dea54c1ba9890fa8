"""The console's web layer: session and CSRF middleware, security headers, rendering and the section map.

Pages are aiohttp handlers registered by the modules of :mod:`.views` (each has ``register(console)``); they
render Jinja2 templates (autoescaped) with :meth:`Console.render`. A page that needs a signed-in user uses
:func:`signed_in` (or ``manager`` / ``operator``): an anonymous visitor is sent to the sign-in page and back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from .client import ApiClient, ApiProblem, SessionExpired
from .constants import CONTENT_SECURITY_POLICY, CSRF_FIELD, CSRF_HEADER, MAX_FORM_BYTES
from .session import Session, SessionCodec
from .settings import ConsoleSettings

log = logging.getLogger("novapulse.console")

CONSOLE_KEY = web.AppKey("console", object)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PACKAGE_DIR = Path(__file__).parent
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Section:
    """An entry of the navigation: shown when its service is configured and the user's role allows it."""

    key: str
    title: str
    path: str
    service: str
    managers_only: bool = False
    operators_only: bool = False


class Console:
    """What every page handler needs: settings, the API client, the session codec and the templates."""

    def __init__(self, settings: ConsoleSettings, client: ApiClient, codec: SessionCodec) -> None:
        self.settings = settings
        self.client = client
        self.codec = codec
        self.sections: list[Section] = []
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["urlquote"] = lambda v: quote(str(v), safe="")

    def section(self, section: Section) -> None:
        self.sections.append(section)

    def visible_sections(self, session: Session) -> list[Section]:
        if not session.signed_in:
            return []
        return [
            s
            for s in self.sections
            if self.client.has(s.service)
            and (not s.managers_only or session.manager)
            and (not s.operators_only or session.operator)
        ]

    def render(self, request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
        """The page ``template`` rendered with ``context`` plus ``session``, ``csrf``, ``nav``, ``flash`` and
        ``htmx`` (the request came from htmx: templates may render only their fragment)."""
        session: Session = request["session"]
        flash = list(session.flash)
        if flash:
            session.flash = []
            request["session_changed"] = True
        body = self.env.get_template(template).render(
            session=session,
            csrf=session.csrf,
            csrf_field=CSRF_FIELD,
            nav=self.visible_sections(session),
            current=request.path,
            flash=flash,
            htmx=request.headers.get("HX-Request") == "true",
            **context,
        )
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def console_of(request: web.Request) -> Console:
    console = request.app[CONSOLE_KEY]
    assert isinstance(console, Console)
    return console


def redirect(request: web.Request, location: str) -> web.Response:
    """A 303 to ``location`` (htmx requests get ``HX-Redirect`` so the whole page moves)."""
    if request.headers.get("HX-Request") == "true":
        return web.Response(status=204, headers={"HX-Redirect": location})
    return web.Response(status=303, headers={"Location": location})


def safe_next(value: str | None) -> str:
    """A same-site path to return to after sign-in (never another host: open-redirect guard)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


async def form(request: web.Request) -> dict[str, str]:
    """The request's form fields (one value each; the CSRF field removed). 413 above :data:`MAX_FORM_BYTES`."""
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM_BYTES, actual_size=request.content_length)
    data = await request.post()
    return {k: str(v) for k, v in data.items() if k != CSRF_FIELD and isinstance(v, str)}


def _same_origin(request: web.Request) -> bool:
    """``Origin`` (or, without it, ``Referer``) names this host, or neither is sent (older clients; the CSRF
    token still decides). ``Sec-Fetch-Site: cross-site`` is refused outright."""
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return False
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return origin != "null"
    host = request.headers.get("X-Forwarded-Host") or request.host
    return urlsplit(origin).netloc == host


def console_middleware(console: Console) -> Any:
    """Session in, CSRF checked on every unsafe method, security headers out, session cookie re-written when
    it changed; an expired session sends the user to sign in; an API problem nobody caught is shown as a
    page (or a fragment for htmx)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _is_page(request):
            return await handler(request)
        session = console.codec.load(request)
        request["session_changed"] = session is None
        if session is None:
            session = Session.anonymous()
        request["session"] = session
        try:
            if request.method not in SAFE_METHODS:
                presented = request.headers.get(CSRF_HEADER, "")
                if not presented and request.content_type in (
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                ):
                    presented = str((await request.post()).get(CSRF_FIELD, ""))
                if not _same_origin(request) or not session.check_csrf(presented):
                    log.warning("csrf check failed", extra={"path": request.path, "method": request.method})
                    response: web.StreamResponse = console.render(
                        request,
                        "error.html",
                        status=403,
                        title="Request refused",
                        message="This form was not sent from this console (CSRF check failed). Reload the page.",
                    )
                else:
                    response = await handler(request)
            else:
                response = await handler(request)
        except SessionExpired:
            fresh = Session.anonymous()
            fresh.flash_message("warning", "Your session has ended; sign in again.")
            request["session"] = fresh
            request["session_changed"] = True
            back = request.path_qs if request.method == "GET" else "/"
            response = redirect(request, f"/sign-in?next={quote(back, safe='')}")
        except ApiProblem as problem:
            response = console.render(
                request,
                "error.html",
                status=problem.status if 400 <= problem.status < 600 else 502,
                title=problem.title,
                message=problem.message,
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = console.render(
                request, "error.html", status=exc.status, title=exc.reason, message=exc.text or ""
            )
        _secure_headers(response)
        # a flash message added by the handler must reach the next page even when nothing else changed
        if (request["session_changed"] or request["session"].flash) and not response.prepared:
            console.codec.store(response, request["session"])
        return response

    return middleware


def _is_page(request: web.Request) -> bool:
    path = request.path
    return not (path.startswith("/static/") or path.startswith("/health") or path in ("/metrics", "/livez", "/readyz"))


def _secure_headers(response: web.StreamResponse) -> None:
    if response.prepared:
        return
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    # same-origin, not no-referrer: under no-referrer browsers send ``Origin: null`` with the console's own form
    # posts (Fetch: the origin is serialised under the referrer policy), which the CSRF check must refuse
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    response.headers.setdefault("Cache-Control", "no-store")


def signed_in(handler: Handler) -> Handler:
    """The page needs a signed-in user (else: to the sign-in page, and back after)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        if not request["session"].signed_in:
            raise SessionExpired
        return await handler(request)

    wrapped.__name__ = handler.__name__
    return wrapped


def managers_only(handler: Handler) -> Handler:
    """The page is for owners and admins (others: 403 page; the API would refuse them too)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        session: Session = request["session"]
        if not session.signed_in:
            raise SessionExpired
        if not session.manager:
            raise web.HTTPForbidden(reason="Forbidden", text="Only the organisation's owners and admins may do this.")
        return await handler(request)

    wrapped.__name__ = handler.__name__
    return wrapped


def operators_only(handler: Handler) -> Handler:
    """The page is for the platform's operators (``CONSOLE_OPERATOR_EMAILS``); a tenant gets 404, as if the
    page did not exist."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        session: Session = request["session"]
        if not session.signed_in:
            raise SessionExpired
        if not session.operator:
            raise web.HTTPNotFound(reason="Not found", text="There is no such page.")
        return await handler(request)

    wrapped.__name__ = handler.__name__
    return wrapped
