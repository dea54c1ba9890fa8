"""The per-process runtime: settings, clients, metrics, tracing, health and rate limiting, wired once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from opentelemetry.sdk.trace.export import SpanExporter
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from .health import Health, memory_check
from .instrumentation import database_spans_wanted
from .instrumentation import instrument as install_instrumentation
from .metrics import Metrics
from .querylog import install_from_env as install_query_log
from .ratelimit import RateLimiter
from .redisconn import connect_redis
from .revocation import RevocationList
from .settings import ServiceSettings
from .tokens import TokenVerifier
from .tracing import Tracing, sampler

if TYPE_CHECKING:
    from .bus import EventBus

T = TypeVar("T")


class Indexed(Protocol):
    """A repository: built from the service's database, with the indexes its queries rely on."""

    async def ensure_indexes(self) -> None: ...


R = TypeVar("R", bound=Indexed)

log = logging.getLogger("novapulse.runtime")

Worker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""Background work: runs until the event is set, then finishes what it holds and returns."""


MONGO_SERVER_SELECTION_TIMEOUT_MS = 3000
"""How long an operation waits for a reachable MongoDB server before raising ``ServerSelectionTimeoutError``."""
MONGO_SOCKET_TIMEOUT_MS = 10_000
"""How long a MongoDB operation waits on an open connection before raising ``NetworkTimeout``: a server that
stops answering (paused, partitioned) becomes an error a view maps to 503 instead of a request that hangs."""
REDIS_SOCKET_TIMEOUT = 5.0
"""Seconds a Redis command waits for its reply before raising ``TimeoutError`` (→ 503 from a view)."""


class Runtime:
    """Everything one process shares, created inside the running event loop: settings, the MongoDB database
    and Redis client (both connect lazily: nothing happens at import or construction time), metrics,
    tracing, health checks, the rate limiter, the access-token verifier and the event bus (:attr:`bus`).

    Resources a service opens (a mail catcher, a thread pool) are entered with :meth:`open` and closed in
    reverse order by :meth:`close`, after the process's workers have finished.
    """

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
        self.tracing = Tracing(
            settings.service_name,
            role,
            settings.otel_exporter_otlp_endpoint,
            span_exporter,
            sampler(settings.otel_traces_sampler, settings.otel_traces_sampler_arg),
        )
        self.tracer = self.tracing.tracer
        install_query_log()  # NOVAPULSE_QUERY_LOG (tests, make run): the index audit's query shapes
        if instrument:  # before the clients exist: pymongo's command listeners attach at client creation
            exporting = span_exporter is not None or bool(settings.otel_exporter_otlp_endpoint)
            databases = database_spans_wanted(settings.trace_database_spans, exporting)
            install_instrumentation(self.tracing.provider, databases=databases)
        self.health = Health(self.metrics, settings.health_check_timeout)
        self.redis: Redis = connect_redis(  # one server, a cluster or a Sentinel-managed primary
            settings.redis_url,
            socket_timeout=REDIS_SOCKET_TIMEOUT,
            sentinel_password=settings.redis_sentinel_password.get_secret_value(),
        )
        self._mongo: AsyncMongoClient[dict[str, Any]] | None = None
        self._db: AsyncDatabase[dict[str, Any]] | None = None
        if settings.uses_database:
            self._mongo = AsyncMongoClient(
                settings.mongo_url,
                tz_aware=True,
                serverSelectionTimeoutMS=MONGO_SERVER_SELECTION_TIMEOUT_MS,
                socketTimeoutMS=MONGO_SOCKET_TIMEOUT_MS,
                connectTimeoutMS=2000,
                appname=f"novapulse-{settings.service_name}-{role}",
            )
            self._db = self._mongo[settings.database_name()]
        self.limiter = (
            RateLimiter(self.redis, self.metrics, settings.service_name) if settings.rate_limit_enabled else None
        )
        self.tokens = TokenVerifier(
            settings.auth_jwks_url,
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            revocations=RevocationList(self.redis, settings.events_namespace),  # pushed by auth (revocation.py)
        )
        if self._mongo is not None:
            self.health.add("mongodb", self._ping_mongo)
        self.health.add("redis", self._ping_redis)
        self.health.add("memory", memory_check(settings.memory_limit_mb), required=False)
        self._resources = contextlib.AsyncExitStack()
        self._bus: EventBus | None = None
        self._shared: dict[str, asyncio.Future[Any]] = {}

    @property
    def mongo(self) -> AsyncMongoClient[dict[str, Any]]:
        """The MongoDB client (connects lazily). Raises ``RuntimeError`` for a service whose settings say it
        owns no database (``uses_database = False``: the console)."""
        if self._mongo is None:
            raise RuntimeError(f"{self.service} owns no database (its settings' uses_database is False)")
        return self._mongo

    @property
    def db(self) -> AsyncDatabase[dict[str, Any]]:
        """The service's own database (``MONGO_DB`` or ``novapulse_<service>``); ``RuntimeError`` as :attr:`mongo`."""
        if self._db is None:
            raise RuntimeError(f"{self.service} owns no database (its settings' uses_database is False)")
        return self._db

    @property
    def bus(self) -> EventBus:
        """The process's one event bus (streams, consumers, outbox, operations routes), built on first use."""
        if self._bus is None:
            from .bus import EventBus

            self._bus = EventBus(self)
        return self._bus

    @property
    def serves_api(self) -> bool:
        """Whether this process serves the service's routes (role ``api`` or ``all``)."""
        return self.role in ("api", "all")

    @property
    def runs_workers(self) -> bool:
        """Whether this process runs the service's background work (role ``worker`` or ``all``)."""
        return self.role in ("worker", "all")

    async def shared(self, name: str, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """The result of ``factory()``, run once per process under ``name``: what both composition roots of
        a process with role ``all`` need (a repository whose indexes are ensured, a service graph) is wired
        once. A factory that raised is run again by the next caller; one whose caller was cancelled is run
        again by a waiting caller (the cancellation was not meant for it)."""
        while True:
            future = self._shared.get(name)
            if future is None:
                future = asyncio.get_running_loop().create_future()
                self._shared[name] = future
                try:
                    result = await factory()
                except asyncio.CancelledError:
                    del self._shared[name]
                    future.cancel()
                    raise
                except BaseException as exc:
                    del self._shared[name]
                    future.set_exception(exc)
                    future.exception()  # retrieved: only the callers waiting on it see it
                    raise
                future.set_result(result)
                return result
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if future.cancelled() and (task is None or not task.cancelling()):
                    continue  # the caller running the factory was cancelled, not this one: run it here
                raise

    async def repository(self, cls: Callable[[AsyncDatabase[dict[str, Any]]], R]) -> R:
        """``cls(self.db)`` with its ``ensure_indexes()`` awaited, once per process for each ``cls`` (shared by
        the ``api`` and ``worker`` roles of an ``all`` process)."""

        async def make() -> R:
            repo = cls(self.db)
            await repo.ensure_indexes()
            return repo

        key = f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', repr(cls))}"
        return await self.shared(f"repository:{key}", make)

    async def open(self, resource: AbstractAsyncContextManager[T]) -> T:
        """Enter ``resource`` (an async context manager: one generator opens and closes it, as aiohttp's
        ``cleanup_ctx``) and return what it yields; it is exited in reverse order by :meth:`close`."""
        return await self._resources.enter_async_context(resource)

    async def _ping_mongo(self) -> None:
        await self.mongo.admin.command("ping")

    async def _ping_redis(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        """Exit the resources entered with :meth:`open` (latest first; an error is logged, not raised), then
        close the token verifier and the Redis and MongoDB clients."""
        try:
            await self._resources.aclose()
        except Exception:
            log.exception("closing a resource failed")
        try:
            await self.tokens.close()
        finally:
            try:
                await self.redis.aclose()
            finally:
                if self._mongo is not None:
                    await self._mongo.close()
