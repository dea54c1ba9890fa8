"""Fixtures of the bus tests: runtimes on the session's servers, a unique bus namespace per test, a helper to
run workers until the end of a block, and the sample event the tests publish (:func:`user`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SpanExporter

from novapulse_runtime.bus import EventBus
from novapulse_runtime.catalog.auth import UserRegistered
from novapulse_runtime.runtime import Runtime, Worker
from novapulse_runtime.settings import ServiceSettings

OPERATIONS_TOKEN = "ops-" + "x" * 40
OPS_HEADERS = {"Authorization": f"Bearer {OPERATIONS_TOKEN}"}

RuntimeFactory = Callable[..., Runtime]


def user(i: int, org: str = "o1") -> UserRegistered:
    """The ``user.registered`` payload of user ``u<i>`` in organisation ``org``: the event the bus tests publish."""
    return UserRegistered(
        user_id=f"u{i}", org_id=org, email=f"u{i}@example.com", name=f"U{i}", role="owner", organization="Acme"
    )


@pytest.fixture
async def make_runtime(redis_url: str, mongo_url: str, names: str) -> AsyncIterator[RuntimeFactory]:
    made: list[Runtime] = []

    def make(
        service: str = "auth",
        *,
        redis: str | None = None,
        exporter: SpanExporter | None = None,
        concurrency: int = 16,
    ) -> Runtime:
        settings = ServiceSettings(
            service_name=service,
            redis_url=redis or redis_url,
            mongo_url=mongo_url,
            mongo_db=f"{names}_{service}"[:60],
            queue_concurrency=concurrency,
            operations_token=OPERATIONS_TOKEN,  # type: ignore[arg-type]
        )
        rt = Runtime(settings, role="worker", span_exporter=exporter)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        with contextlib.suppress(Exception):
            await rt.close()


@pytest.fixture
def make_bus(make_runtime: RuntimeFactory, names: str) -> Callable[..., EventBus]:
    def make(service: str = "auth", *, rt: Runtime | None = None, **kw: Any) -> EventBus:
        runtime = rt or make_runtime(service)
        return EventBus(runtime, namespace=names, **kw)

    return make


@contextlib.asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[asyncio.Event]:
    """Run workers until the block ends, then stop them and re-raise anything they raised."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w(stop)) for w in workers]
    try:
        yield stop
    finally:
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=30)
        for t in pending:
            t.cancel()
        assert not pending, "workers did not stop within 30 s"
        for t in done:
            t.result()
