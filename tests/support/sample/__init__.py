"""A minimal service used only by the runtime's tests: a slow route (shutdown drain), a rate-limited route
(shared limits), a validated body (error shapes), and a background worker."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from pydantic import BaseModel, Field

from novapulse_runtime.process import ServiceSpec
from novapulse_runtime.ratelimit import RateLimit
from novapulse_runtime.routes import Routes
from novapulse_runtime.runtime import Composition, Runtime
from novapulse_runtime.settings import ServiceSettings
from novapulse_runtime.tokens import principal

log = logging.getLogger("sample")


class SampleSettings(ServiceSettings):
    service_name: str = "sample"
    http_port: int = 8199


class EchoIn(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    count: int = Field(ge=0, le=10)


class EchoOut(BaseModel):
    name: str
    count: int


class SlowQuery(BaseModel):
    seconds: float = Field(default=1.0, ge=0, le=30)


async def build(rt: Runtime) -> Composition:
    routes = Routes(prefix="/api/v1/sample", tags=["sample"])

    @routes.post("/echo", body=EchoIn, response=EchoOut, status=201)
    async def echo(request: web.Request, body: EchoIn) -> EchoOut:
        """Echo a validated body."""
        log.info("echo", extra={"echo_name": body.name})
        return EchoOut(name=body.name, count=body.count)

    @routes.get("/slow", query=SlowQuery, response=EchoOut)
    async def slow(request: web.Request, query: SlowQuery) -> EchoOut:
        """Answer after a delay."""
        await asyncio.sleep(query.seconds)
        return EchoOut(name="slow", count=int(query.seconds))

    @routes.get("/limited", response=EchoOut, rate_limits=[RateLimit("limited-ip", 5, 60)])
    async def limited(request: web.Request) -> EchoOut:
        """Five calls a minute per client address."""
        return EchoOut(name="ok", count=0)

    @routes.get("/boom")
    async def boom(request: web.Request) -> None:
        """Fail with an unexpected error."""
        raise RuntimeError("secret internal detail")

    @routes.get("/whoami", response=EchoOut, auth=True)
    async def whoami(request: web.Request) -> EchoOut:
        """The caller's user id."""
        return EchoOut(name=principal(request).user_id, count=0)

    async def ticker(stop: asyncio.Event) -> None:
        await stop.wait()
        log.info("ticker stopped")

    return Composition(routes=routes, workers=[ticker], authenticator=rt.tokens.authenticate)


SPEC = ServiceSpec(name="sample", settings_cls=SampleSettings, build=build, package="tests.support.sample")
