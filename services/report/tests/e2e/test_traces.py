"""Traces from request to completion: the ``POST /reports`` request's trace context is stored with the report,
and the worker's ``report.generate`` span continues that trace (real api and worker processes exporting
OTLP/HTTP to a receiver in the test)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers_report import FEB, JAN, PREFIX, auth_rows, env, finished, seed
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pymongo import AsyncMongoClient

from novapulse_devkit.servers import free_port
from novapulse_devkit.testing import ServiceProcess, TokenIssuer, start_together
from novapulse_report.repository import Repository

pytestmark = pytest.mark.e2e

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[Any]]]:
    """An OTLP/HTTP trace receiver: its endpoint and the spans it got."""
    spans: list[Any] = []

    async def traces(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        spans.extend(s for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans)
        return web.Response(content_type="application/x-protobuf", body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", spans
    await runner.cleanup()


async def test_the_generation_span_continues_the_requests_trace(
    spawn: Callable[..., ServiceProcess],
    token_issuer: TokenIssuer,
    names: str,
    mongo: AsyncMongoClient[dict[str, Any]],
    receiver: tuple[str, list[Any]],
) -> None:
    endpoint, spans = receiver
    settings = token_issuer.env() | env(names, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
    api = spawn("novapulse_report", "api", env=settings, start=False)
    worker = spawn("novapulse_report", "worker", env=settings, start=False)
    start_together([api, worker])
    await seed(Repository(mongo[api.env["MONGO_DB"]]), auth_rows("o1", 30))
    headers = {
        "Authorization": f"Bearer {token_issuer.mint('u1', 'o1', 'owner')}",
        "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01",
    }
    ask = {"type": "auth_activity", "format": "csv", "start": JAN, "end": FEB}
    async with aiohttp.ClientSession() as http:
        async with http.post(api.url + PREFIX, json=ask, headers=headers) as r:
            assert r.status == 202
            report = await r.json()
        done = await finished(http, f"{api.url}{PREFIX}/{report['id']}", {"Authorization": headers["Authorization"]})
        assert done["status"] == "succeeded"
    for process in (api, worker):  # spans are flushed at shutdown
        process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0
    ours = {s.span_id.hex(): s for s in spans if s.trace_id.hex() == TRACE_ID}
    generate = [s for s in ours.values() if s.name == "report.generate"]
    assert len(generate) == 1, sorted(s.name for s in ours.values())
    attributes = {a.key: a.value for a in generate[0].attributes}
    assert attributes["report.id"].string_value == report["id"]
    assert attributes["report.outcome"].string_value == "succeeded"
    # its parent is a span of the request (the api's server span or one inside it), itself under the caller's
    parent = ours[generate[0].parent_span_id.hex()]
    while parent.parent_span_id.hex() in ours:
        parent = ours[parent.parent_span_id.hex()]
    assert parent.name == f"POST {PREFIX}"
    assert parent.parent_span_id.hex() == CALLER_SPAN
