"""Test helpers: a real HTTP receiver for webhooks and a small API client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Behaviour:
    """What one path answers. ``script`` is consumed first (one entry per request), then ``status``."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    hang: bool = False
    delay: float = 0.0


class Receiver:
    """An aiohttp server on 127.0.0.1 recording every request; per-path behaviour (200/410/429/500/hang)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.behaviour: dict[str, Behaviour] = {}
        self.in_flight = 0
        self.peak: dict[str, int] = {}  # most requests in flight at once, per path name
        self._in_flight_by: dict[str, int] = {}
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def set(self, name: str, **kw: Any) -> Behaviour:
        self.behaviour[name] = Behaviour(**kw)
        return self.behaviour[name]

    def on(self, name: str) -> list[Seen]:
        return [s for s in self.seen if s.path == f"/{name}"]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        name = request.match_info["name"]
        self.seen.append(Seen(request.path, dict(request.headers), body, time.monotonic()))
        b = self.behaviour.get(name) or Behaviour()
        self.in_flight += 1
        self._in_flight_by[name] = self._in_flight_by.get(name, 0) + 1
        self.peak[name] = max(self.peak.get(name, 0), self._in_flight_by[name])
        try:
            if b.hang:
                await self._release.wait()
                return web.Response(status=200)
            if b.delay:
                await asyncio.sleep(b.delay)
            if b.script:
                status, headers = b.script.pop(0)
            else:
                status, headers = b.status, b.headers
            return web.Response(status=status, headers=headers, text="ok" if status < 300 else "nope")
        finally:
            self.in_flight -= 1
            self._in_flight_by[name] -= 1


class Api:
    """Calls the webhook API with a bearer token."""

    def __init__(self, base: str, token: str, session: aiohttp.ClientSession) -> None:
        self.base = base.rstrip("/") + "/api/v1/webhooks"
        self.token = token
        self.session = session

    async def call(self, method: str, path: str, json: Any = None, **params: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method, self.base + path, json=json, headers=headers, params=params or None
        ) as resp:
            data = await resp.json(content_type=None) if resp.status != 204 else None
            return resp.status, data

    async def ok(self, method: str, path: str, json: Any = None, expect: int = 200, **params: Any) -> Any:
        status, data = await self.call(method, path, json, **params)
        assert status == expect, (status, data)
        return data

    async def endpoint(self, url: str, **kw: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.ok("POST", "/endpoints", {"url": url, **kw}, expect=201)
        return result

    async def event(self, type_: str, data: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": type_, "data": data}
        if key:
            body["idempotency_key"] = key
        result: dict[str, Any] = await self.ok("POST", "/events", body, expect=202)
        return result

    async def messages(self, **params: Any) -> list[dict[str, Any]]:
        data = await self.ok("GET", "/messages", **params)
        items: list[dict[str, Any]] = data["items"]
        return items

    async def attempts(self, message_id: str) -> list[dict[str, Any]]:
        data = await self.ok("GET", f"/messages/{message_id}/attempts")
        items: list[dict[str, Any]] = data["items"]
        return items


def all_final(items: list[dict[str, Any]], count: int) -> Callable[[], bool]:
    def check() -> bool:
        return len(items) >= count and all(m["status"] in ("succeeded", "failed") for m in items)

    return check
