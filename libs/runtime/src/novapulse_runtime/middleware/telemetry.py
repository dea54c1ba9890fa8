"""Telemetry of each request: a server span in the caller's trace (W3C ``traceparent``), request count and
latency by route template, requests in flight, and one access log line (probes excepted)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..constants import PROBE_PATHS
from ..metrics import Metrics

log = logging.getLogger("novapulse.http")


def route_template(request: web.Request) -> str:
    """The matched route's template (``/api/v1/webhooks/endpoints/{endpoint_id}``), or ``unmatched``: the
    label of request metrics, so their cardinality is bounded by the declared routes."""
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    return info.route.resource.canonical


def telemetry_middleware(metrics: Metrics, tracer: trace.Tracer) -> Any:
    """The middleware recording a span, metrics and the access log line of every request. The status it
    records is the response's; an exception escaping the layers below counts as 500."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = route_template(request)
        started = time.perf_counter()
        status = 500
        metrics.http_in_flight.inc()
        with tracer.start_as_current_span(
            f"{request.method} {route}",
            context=propagate.extract(request.headers),  # case-insensitive: a ``Traceparent`` header counts too
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "url.path": request.path,
                "http.route": route,
                "client.address": request.remote or "",
            },
        ) as span:
            try:
                response = await handler(request)
                status = response.status
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                return response
            finally:
                elapsed = time.perf_counter() - started
                metrics.http_in_flight.dec()
                metrics.http_requests.labels(request.method, route, str(status)).inc()
                metrics.http_latency.labels(request.method, route).observe(elapsed)
                if request.path not in PROBE_PATHS:
                    log.info(
                        "request",
                        extra={
                            "method": request.method,
                            "path": request.path,
                            "route": route,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 2),
                        },
                    )

    return middleware
