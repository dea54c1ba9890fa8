"""The per-process runtime: settings, clients, metrics, tracing, health and rate limiting, wired once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from .health import Health, memory_check
from .http import Authenticator
from .metrics import Metrics
from .ratelimit import RateLimiter
from .revocation import RevocationList
from .routes import Routes
from .settings import ServiceSettings
from .tokens import TokenVerifier
from .tracing import Tracing

Worker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""Background work: runs until the event is set, then finishes what it holds and returns."""

Closer = Callable[[], Awaitable[None]]

MONGO_SERVER_SELECTION_TIMEOUT_MS = 3000
"""How long an operation waits for a reachable MongoDB server before raising ``ServerSelectionTimeoutError``."""
MONGO_SOCKET_TIMEOUT_MS = 10_000
"""How long a MongoDB operation waits on an open connection before raising ``NetworkTimeout``: a server that
stops answering (paused, partitioned) becomes an error a view maps to 503 instead of a request that hangs."""
REDIS_SOCKET_TIMEOUT = 5.0
"""Seconds a Redis command waits for its reply before raising ``TimeoutError`` (→ 503 from a view)."""


@dataclass
class Composition:
    """What a service's composition root hands the process: its routes (API role), its background
    workers (worker role), an access-token authenticator, and extra resources to close at shutdown."""

    routes: Routes | None = None
    workers: list[Worker] = field(default_factory=list)
    authenticator: Authenticator | None = None
    closers: list[Closer] = field(default_factory=list)
    title: str | None = None
    version: str = "0.1.0"


class Runtime:
    """Created inside the running event loop; connects lazily (nothing at import or construction time)."""

    def __init__(
        self,
        settings: ServiceSettings,
        role: str,
        *,
        span_exporter: SpanExporter | None = None,
        instrument: bool = False,
    ) -> None:
        self.settings = settings
        self.role = role
        self.service = settings.service_name
        self.metrics = Metrics(settings.service_name, role)
        self.tracing = Tracing(settings.service_name, role, settings.otel_exporter_otlp_endpoint, span_exporter)
        self.tracer = self.tracing.tracer
        if instrument:  # before the clients exist: pymongo's command listeners attach at client creation
            self.tracing.install()
        self.health = Health(self.metrics, settings.health_check_timeout)
        self.redis: Redis = Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=REDIS_SOCKET_TIMEOUT,
            health_check_interval=15,
            retry_on_timeout=False,
        )
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongo_url,
            tz_aware=True,
            serverSelectionTimeoutMS=MONGO_SERVER_SELECTION_TIMEOUT_MS,
            socketTimeoutMS=MONGO_SOCKET_TIMEOUT_MS,
            connectTimeoutMS=2000,
            appname=f"novapulse-{settings.service_name}-{role}",
        )
        self.db: AsyncDatabase[dict[str, Any]] = self.mongo[settings.database_name()]
        self.limiter = (
            RateLimiter(self.redis, self.metrics, settings.service_name) if settings.rate_limit_enabled else None
        )
        self.tokens = TokenVerifier(
            settings.auth_jwks_url,
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            revocations=RevocationList(self.redis, settings.events_namespace),  # pushed by auth (revocation.py)
        )
        self.health.add("mongodb", self._ping_mongo)
        self.health.add("redis", self._ping_redis)
        self.health.add("memory", memory_check(settings.memory_limit_mb), required=False)

    async def _ping_mongo(self) -> None:
        await self.mongo.admin.command("ping")

    async def _ping_redis(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.tokens.close()
        await self.redis.aclose()
        await self.mongo.close()
