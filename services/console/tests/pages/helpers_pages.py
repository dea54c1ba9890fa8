"""Test helpers of the console's pages: a cookie-jar HTTP client that fills forms like a browser, and page
text extraction."""

from __future__ import annotations

import asyncio
import html
import inspect
import json
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pyotp
from aiohttp import web
from redis.asyncio import Redis

PASSWORD = "Correct-Horse-Battery-9"
OPERATIONS_TOKEN = "pages-operations-token-" + "0123456789abcdef" * 2
OPERATOR = "ops@example.com"
"""The operator of the pages' stacks (``CONSOLE_OPERATOR_EMAILS``)."""
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Page:
    status: int
    text: str
    url: str

    @property
    def path(self) -> str:
        return urlsplit(self.url).path or "/"

    @property
    def csrf(self) -> str:
        found = CSRF.search(self.text)
        assert found, f"no CSRF token in {self.url}"
        return found[1]

    def flash(self) -> list[str]:
        return [html.unescape(m) for m in re.findall(r'class="flash flash-\w+"[^>]*>(.*?)</p>', self.text, re.S)]

    def by_id(self, element_id: str) -> str:
        """The text inside the element with id ``element_id`` (tags removed, spaces collapsed)."""
        match = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:p|dd|div|ul|section|table)>', self.text, re.S)
        assert match, f"no #{element_id} in {self.url}"
        text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", match[1])).split())
        return re.sub(r" ([):,.;])", r"\1", text)


class Browser:
    """An HTTP client with a cookie jar: pages are fetched, forms posted with the page's CSRF token and an
    ``Origin`` of the console, redirects followed."""

    def __init__(self, base: str, http: aiohttp.ClientSession) -> None:
        self.base = base
        self.http = http

    async def get(self, path: str, **headers: str) -> Page:
        async with self.http.get(self.base + path, headers=headers) as resp:
            return Page(resp.status, await resp.text(), str(resp.url))

    async def post(self, path: str, fields: dict[str, Any] | list[tuple[str, str]], page: Page | None = None) -> Page:
        """POST ``fields`` with the CSRF token of ``page`` (default: a fresh page of the console)."""
        token = (page or await self.get("/sign-in")).csrf
        data = list(fields.items()) if isinstance(fields, dict) else list(fields)
        data.append(("csrf_token", token))
        async with self.http.post(self.base + path, data=data, headers={"Origin": self.base}) as resp:
            return Page(resp.status, await resp.text(), str(resp.url))

    async def register(self, email: str, organization: str | None = None) -> Page:
        page = await self.post(
            "/register",
            {"email": email, "name": "Tester", "organization": organization or f"Org of {email}", "password": PASSWORD},
        )
        assert page.status == 200, page.text[:2000]
        return page

    async def sign_in(self, email: str) -> Page:
        page = await self.post("/sign-in", {"email": email, "password": PASSWORD, "next": "/"})
        assert (page.status, page.path) == (200, "/"), (page.status, page.url, page.flash())
        return page


class Api:
    """A service's API called directly with a user's token (to check what the pages changed)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http = http
        self.base = base
        self.token = token

    @classmethod
    async def login(cls, http: aiohttp.ClientSession, auth_url: str, base: str, email: str) -> Api:
        async with http.post(f"{auth_url}/api/v1/auth/login", json={"email": email, "password": PASSWORD}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        return cls(http, base, body["access_token"])

    async def call(self, method: str, path: str, json: Any = None, **params: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(method, self.base + path, json=json, headers=headers, params=params) as resp:
            return resp.status, (await resp.json(content_type=None) if resp.status != 204 else None)

    async def ok(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        status, body = await self.call(method, path, json, **params)
        assert 200 <= status < 300, (status, body)
        return body


async def invite_member(
    http: aiohttp.ClientSession, auth_url: str, redis_url: str, names: str, owner_email: str, email: str, role: str
) -> None:
    """Invite ``email`` into the owner's organisation with ``role`` and accept (auth's API; the invite's token
    read from auth's private ``invite.delivery_requested`` event on the stream, as the notification service
    would mail it)."""
    base = f"{auth_url}/api/v1/auth"
    async with http.post(f"{base}/login", json={"email": owner_email, "password": PASSWORD}) as resp:
        token = (await resp.json())["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{base}/invites", json={"email": email, "role": role}, headers=headers) as resp:
        invite = await resp.json()
        assert resp.status == 201, invite
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        for _ in range(300):
            found = [
                json.loads(f["data"])["token"]
                for _id, f in await redis.xrange(f"{names}:events:auth")
                if f.get("type") == "invite.delivery_requested" and json.loads(f["data"])["invite_id"] == invite["id"]
            ]
            if found:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the invite never reached the stream")
    finally:
        await redis.aclose()
    accept = {"token": found[0], "name": "Mia Member", "password": PASSWORD}
    async with http.post(f"{base}/invites/accept", json=accept) as resp:
        assert resp.status == 201, await resp.text()


async def enable_mfa(http: aiohttp.ClientSession, auth_url: str, email: str) -> str:
    """Turn on ``email``'s MFA through auth's API; returns the TOTP secret (operators need MFA on)."""
    base = f"{auth_url}/api/v1/auth"
    async with http.post(f"{base}/login", json={"email": email, "password": PASSWORD}) as resp:
        headers = {"Authorization": f"Bearer {(await resp.json())['access_token']}"}
    async with http.post(f"{base}/mfa/setup", headers=headers) as resp:
        setup = await resp.json()
        assert resp.status == 200, setup
    secret = parse_qs(urlsplit(setup["otpauth_uri"]).query)["secret"][0]
    async with http.post(f"{base}/mfa/enable", json={"code": pyotp.TOTP(secret).now()}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
    return str(secret)


async def sign_in_with_code(b: Browser, email: str, secret: str) -> Page:
    """Password, then the MFA step with a code one time step ahead (the set-up used the current one)."""
    first = await b.post("/sign-in", {"email": email, "password": PASSWORD, "next": "/"})
    assert first.path == "/sign-in/mfa", (first.url, first.flash())
    code = pyotp.TOTP(secret).at(time.time() + 30)
    page = await b.post("/sign-in/mfa", {"code": code, "next": "/"}, first)
    assert (page.status, page.path) == (200, "/"), (page.status, page.url, page.flash())
    return page


class Receiver:
    """A real HTTP server recording what it is sent; answers ``status``."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Receiver:
        async def handle(request: web.Request) -> web.Response:
            self.seen.append((dict(request.headers), await request.read()))
            return web.Response(status=self.status, text=f"receiver says {self.status}")

        app = web.Application()
        app.router.add_post("/hook", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self


def own_loop(scenario: Callable[..., Awaitable[None]]) -> Callable[[Any, str], None]:
    """A pytest test running ``scenario`` on an event loop of its own, in a thread of its own.

    Playwright's sync API (the browser tests' session-wide ``browser`` fixture) keeps an event loop running
    in the main thread for the rest of the session, where pytest-asyncio then cannot run a loop: these tests
    must not depend on which ran first. The test takes the fixtures ``pages_stack`` and ``email``; the
    scenario may ask, by parameter name, for ``pages_stack``, ``email``, ``http`` (an ``aiohttp`` session),
    ``visitor`` (``await visitor()`` → a new :class:`Browser`) and ``receiver`` (a started :class:`Receiver`).
    """
    wanted = set(inspect.signature(scenario).parameters)

    async def main(pages_stack: Any, email: str) -> None:
        made: list[Browser] = []
        receiver = await Receiver().start() if "receiver" in wanted else None

        async def visitor() -> Browser:
            b = Browser(pages_stack.console, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
            made.append(b)
            return b

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                given = {
                    "pages_stack": pages_stack,
                    "email": email,
                    "http": http,
                    "visitor": visitor,
                    "receiver": receiver,
                }
                await scenario(**{k: v for k, v in given.items() if k in wanted})
        finally:
            for b in made:
                await b.http.close()
            if receiver is not None and receiver.runner is not None:
                await receiver.runner.cleanup()

    def test(pages_stack: Any, email: str) -> None:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, main(pages_stack, email)).result()

    test.__name__ = scenario.__name__
    test.__qualname__ = scenario.__qualname__
    test.__doc__ = scenario.__doc__
    test.__module__ = scenario.__module__
    return test
