"""Spans reach an OTLP receiver: server spans, Redis and MongoDB client spans, flushed at shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from novapulse_devkit.servers import free_port
from novapulse_devkit.testing import ServiceProcess
from novapulse_runtime.instrumentation import database_spans_wanted
from novapulse_runtime.settings import DatabaseSpans

from .conftest import SAMPLE

pytestmark = pytest.mark.integration


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        received.append(msg)
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", received
    await runner.cleanup()


async def test_spans_exported_and_flushed(
    collector: tuple[str, list[ExportTraceServiceRequest]],
    spawn: Callable[..., ServiceProcess],
    http: aiohttp.ClientSession,
) -> None:
    endpoint, received = collector
    svc = spawn(SAMPLE, "api", env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    headers = {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
    async with http.get(svc.url + "/api/v1/health", headers=headers) as r:
        assert r.status == 200
    svc.signal(signal.SIGTERM)
    assert await asyncio.to_thread(svc.wait, 20) == 0
    spans = []
    for req in received:
        for rs in req.resource_spans:
            attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
            assert attrs["service.name"] == "sample"
            for ss in rs.scope_spans:
                spans.extend(ss.spans)
    ours = [s for s in spans if s.trace_id.hex() == trace_id]
    names = {s.name for s in ours}
    assert "GET /api/v1/health" in names
    assert any("PING" in n.upper() for n in names), names  # redis client span
    assert any("ping" in n for n in names if "PING" not in n), names  # pymongo command span
    server = next(s for s in ours if s.name == "GET /api/v1/health")
    assert server.parent_span_id.hex() == "b7ad6b7169203331"


async def test_database_spans_off_keeps_the_server_span(
    collector: tuple[str, list[ExportTraceServiceRequest]],
    spawn: Callable[..., ServiceProcess],
    http: aiohttp.ClientSession,
) -> None:
    """``TRACE_DATABASE_SPANS=off``: the request's server span is exported, its MongoDB and Redis commands
    (the health report pings both) get no client span."""
    endpoint, received = collector
    svc = spawn(SAMPLE, "api", env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "TRACE_DATABASE_SPANS": "off"})
    trace_id = "1af7651916cd43dd8448eb211c80319d"
    headers = {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
    async with http.get(svc.url + "/api/v1/health", headers=headers) as r:
        assert r.status == 200
        assert (await r.json())["checks"]["mongodb"]["status"] == "up"
    svc.signal(signal.SIGTERM)
    assert await asyncio.to_thread(svc.wait, 20) == 0
    names = {
        s.name
        for req in received
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
        if s.trace_id.hex() == trace_id
    }
    assert names == {"GET /api/v1/health"}


@pytest.mark.parametrize(
    ("setting", "exporting", "wanted"),
    [
        ("auto", True, True),
        ("auto", False, False),
        ("on", False, True),
        ("on", True, True),
        ("off", True, False),
        ("off", False, False),
    ],
)
def test_database_spans_setting(setting: DatabaseSpans, exporting: bool, wanted: bool) -> None:
    assert database_spans_wanted(setting, exporting) is wanted
