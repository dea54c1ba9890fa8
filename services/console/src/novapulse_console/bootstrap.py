"""Composition root of the console: no JSON API of its own, no workers — pages only."""

from __future__ import annotations

from aiohttp import web

from novapulse_runtime.process import ServiceSpec
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.secretbox import SecretBox

from .client import ApiClient
from .session import SessionCodec
from .settings import ConsoleSettings
from .views import account, bus, home, members, mfa, notifications, reports, webhooks, workflows
from .web import CONSOLE_KEY, PACKAGE_DIR, Console, console_middleware

PAGES = (account, home, mfa, members, notifications, webhooks, workflows, reports, bus)
"""The page modules, in navigation order; each has ``register(console, router)``."""


async def pages(rt: Runtime, app: web.Application) -> None:
    """The ``api`` role's pages: session and CSRF middleware, the page modules, the vendored static files."""
    settings = rt.settings
    assert isinstance(settings, ConsoleSettings)
    client = ApiClient(
        settings.service_urls(), settings.console_api_timeout, settings.operations_token.get_secret_value()
    )
    codec = SessionCodec(
        SecretBox(settings.console_session_keys), settings.console_session_max_age, settings.console_cookie_secure
    )
    console = Console(settings, client, codec)
    app[CONSOLE_KEY] = console
    app.middlewares.append(console_middleware(console))
    for module in PAGES:
        module.register(console, app.router)
    app.router.add_static("/static", PACKAGE_DIR / "static", append_version=False)

    async def close_client(_app: web.Application) -> None:
        await client.close()

    app.on_cleanup.append(close_client)


SPEC = ServiceSpec(
    name="console",
    settings_cls=ConsoleSettings,
    pages=pages,
    package="novapulse_console",
    title="NovaPulse console",
)
