"""Helpers of the workflow service's tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from novapulse_devkit.servers import free_port
from novapulse_runtime.bus import EventBus
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings
from novapulse_workflow.ports import Publication


class FakeEffects:
    """Records every published effect; an effect whose type is in ``crash_after`` is recorded, then raises
    (once per listed type): a crash between the effect and the journal write."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, dict[str, Any]]] = []
        self.crash_after: set[str] = set()

    async def publish(self, type_: str, data: dict[str, Any], *, org_id: str, subject: str, event_id: str) -> None:
        self.published.append((event_id, type_, data))
        if type_ in self.crash_after:
            self.crash_after.discard(type_)
            raise RuntimeError("crash after the effect")

    async def publish_many(self, events: list[Publication]) -> None:
        for p in events:
            await self.publish(p.type, p.data, org_id=p.org_id, subject=p.subject, event_id=p.event_id)

    def types(self) -> list[str]:
        return [t for _, t, _ in self.published]


@contextlib.asynccontextmanager
async def producer(source: str, redis_url: str, mongo_url: str, namespace: str) -> AsyncIterator[EventBus]:
    """An event bus publishing as ``source`` (e.g. "auth") into the test's namespace."""
    rt = Runtime(ServiceSettings(service_name=source, redis_url=redis_url, mongo_url=mongo_url), "api")
    try:
        yield EventBus(rt, namespace=namespace, tracing=False)
    finally:
        await rt.close()


async def stream_events(redis_url: str, namespace: str, source: str = "workflow") -> list[tuple[str, str]]:
    """(event id, type) of every entry on ``source``'s stream, in order."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = await client.xrange(f"{namespace}:events:{source}")
    finally:
        await client.aclose()
    return [(fields["id"], fields["type"]) for _, fields in entries]


WELCOME: dict[str, Any] = {
    "name": "Welcome",
    "trigger": {"type": "user.registered", "filter": "event.data.role == 'owner'"},
    "steps": [
        {"key": "hello", "type": "notify", "template": "workflow_notice", "user_id": "${trigger.data.user_id}"},
        {"key": "pause", "type": "delay", "seconds": 1},
        {
            "key": "branch",
            "type": "condition",
            "branches": [{"when": "contains(trigger.data.email, '@example.com')", "next": "tell"}],
            "default": "end",
        },
        {
            "key": "tell",
            "type": "emit",
            "event_type": "customer.onboarded",
            "data": {"user": "${trigger.data.user_id}", "note": "welcomed ${trigger.data.name}"},
        },
    ],
}


class Hooks:
    """A bare HTTP receiver on 127.0.0.1: records the JSON body of every POST."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Hooks:
        app = web.Application()

        async def record(request: web.Request) -> web.Response:
            self.bodies.append(await request.json())
            return web.Response(status=204)

        app.router.add_post("/hook", record)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
