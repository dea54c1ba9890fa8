"""The home page: the organisation and the sections the user may open."""

from __future__ import annotations

from aiohttp import web

from ..web import Console, console_of, signed_in


@signed_in
async def home(request: web.Request) -> web.StreamResponse:
    return console_of(request).render(request, "home.html")


async def login_alias(request: web.Request) -> web.StreamResponse:
    """``/login``: the path the notification service's mails link to (welcome, security notices)."""
    return web.Response(status=308, headers={"Location": "/sign-in"})


def register(console: Console, router: web.UrlDispatcher) -> None:
    router.add_get("/", home)
    router.add_get("/login", login_alias)
