"""The aiohttp application factory every process uses.

It serves the probe and metrics paths, the service's declared routes (each wrapped by :func:`wrap`: operator
and token checks, body and query parsing, rate limits, domain errors) and its OpenAPI document, inside the
middleware of :mod:`.middleware` (request id, telemetry, problems).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from opentelemetry import trace
from pydantic import BaseModel

from . import jsonstrict
from .constants import HEALTH_PATH, LIVE_PATH, METRICS_PATH, READY_PATH
from .errors import DomainError, to_problem
from .health import Health
from .metrics import Metrics
from .middleware import middlewares
from .openapi import build_openapi
from .operators import require_operator
from .parsing import parse_body, parse_query
from .problems import ProblemError
from .ratelimit import RateLimiter, client_key
from .routes import Route, Routes, RouteTable, json_response
from .settings import ServiceSettings
from .tokens import PRINCIPAL_KEY

log = logging.getLogger("novapulse.http")

Authenticator = Callable[[web.Request], Awaitable[Any]]

SETTINGS_KEY = web.AppKey("settings", ServiceSettings)
METRICS_KEY = web.AppKey("metrics", Metrics)
HEALTH_KEY = web.AppKey("health", Health)


class ClientFaultFilter(logging.Filter):
    """Turns aiohttp's "Error handling request" records about requests it could not parse (a NUL or control
    character in a header, a malformed request line: ``HttpProcessingError``, answered 400 by aiohttp) into
    one ``info`` line without a traceback: the client's fault, not an error of this process."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "malformed HTTP request refused (%s): %s", (exc.code, exc.message)
            record.exc_info, record.exc_text = None, None
        return True


def _install_client_fault_filter() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientFaultFilter) for f in server_log.filters):
        server_log.addFilter(ClientFaultFilter())


async def _read_body(request: web.Request, model: type[BaseModel], max_bytes: int) -> BaseModel:
    """Read and validate a JSON body (:func:`.parsing.parse_body`): 413 above ``max_bytes``, 415 when the
    content type is not JSON, 400 when the bytes are not strict JSON, 422 when they break ``model``."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ProblemError(413, f"The request body exceeds {max_bytes} bytes")
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise ProblemError(415, "Send the body as application/json")
    raw = await request.read()  # aiohttp enforces client_max_size while reading (413)
    return parse_body(raw, model)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=jsonstrict.dumps(value).encode(), status=status, content_type="application/json")


def wrap(
    route: Route, settings: ServiceSettings, limiter: RateLimiter | None, authenticator: Authenticator | None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    params = inspect.signature(route.handler).parameters
    wants_body = route.body is not None and "body" in params
    wants_query = route.query is not None and "query" in params

    async def handler(request: web.Request) -> web.StreamResponse:
        if route.operator:
            require_operator(request, settings.operations_token.get_secret_value())
        if route.auth:
            if authenticator is None:
                raise ProblemError(503, "Authentication is not configured for this process")
            request[PRINCIPAL_KEY] = await authenticator(request)
        kwargs: dict[str, Any] = {}
        body = await _read_body(request, route.body, settings.max_body_bytes) if route.body else None
        if wants_body:
            kwargs["body"] = body
        if route.query is not None:
            query = parse_query(request.query, route.query)
            if wants_query:
                kwargs["query"] = query
        headers: dict[str, str] = {}
        if limiter is not None and route.rate_limits:
            headers = await _check_limits(route, request, body, settings, limiter)
        try:
            result = await route.handler(request, **kwargs)
        except DomainError as exc:
            raise to_problem(exc, route.problems) from exc
        if isinstance(result, web.StreamResponse):
            response = result
        elif result is None:
            response = web.Response(status=route.status if route.response is None else 204)
        elif isinstance(result, BaseModel):
            response = json_response(result, route.status)
        else:
            raise TypeError(f"handler {route.name} returned {type(result).__name__}")
        if headers and not response.prepared:
            response.headers.update(headers)
        return response

    return handler


async def _check_limits(
    route: Route, request: web.Request, body: Any, settings: ServiceSettings, limiter: RateLimiter
) -> dict[str, str]:
    tightest: dict[str, str] = {}
    tightest_remaining = None
    for limit in route.rate_limits:
        if limit.key is None:
            bucket: str | None = client_key(request, settings.trusted_proxies, settings.rate_limit_ipv6_prefix)
        else:
            value = limit.key(request, body)
            bucket = await value if inspect.isawaitable(value) else value
        if bucket is None:
            continue
        decision = await limiter.hit(limit, bucket)
        headers = decision.headers(limit.policy)
        if not decision.allowed:
            raise ProblemError(429, f"Rate limit '{limit.name}' exceeded; retry later", headers=headers)
        if tightest_remaining is None or decision.remaining < tightest_remaining:
            tightest, tightest_remaining = headers, decision.remaining
    return tightest


def create_app(
    *,
    settings: ServiceSettings,
    metrics: Metrics,
    health: Health,
    tracer: trace.Tracer,
    routes: Routes | None = None,
    limiter: RateLimiter | None = None,
    authenticator: Authenticator | None = None,
    title: str | None = None,
    version: str = "0.1.0",
) -> web.Application:
    """Build the process's aiohttp application.

    Operator routes (``Route.operator``) are served and documented only when ``OPERATIONS_TOKEN`` is set;
    without it they do not exist (404), so the OpenAPI document does not list them either.
    """
    _install_client_fault_filter()
    if routes is not None and not settings.operations_token.get_secret_value():
        visible = Routes(routes.prefix, routes.tags)
        visible.items = [r for r in routes.items if not r.operator]
        routes = visible
    table = RouteTable(routes.items) if routes is not None else None
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=middlewares(metrics, tracer, table))
    app[SETTINGS_KEY] = settings
    app[METRICS_KEY] = metrics
    app[HEALTH_KEY] = health

    async def health_view(_: web.Request) -> web.Response:
        ok, report = await health.report()
        report["service"] = settings.service_name
        return _json(report, status=200 if ok else 503)

    async def live_view(_: web.Request) -> web.Response:
        return _json({"status": "up"})

    async def ready_view(_: web.Request) -> web.Response:
        ok, report = await health.report(required_only=True)
        return _json(
            {
                "status": "ready" if ok else "not_ready",
                "state": report["state"],
                "checks": {k: v["status"] for k, v in report["checks"].items()},
            },
            status=200 if ok else 503,
        )

    async def metrics_view(_: web.Request) -> web.Response:
        body, ctype = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": ctype})

    app.router.add_get(HEALTH_PATH, health_view)
    app.router.add_get(LIVE_PATH, live_view)
    app.router.add_get(READY_PATH, ready_view)
    app.router.add_get(METRICS_PATH, metrics_view)

    if routes is not None:
        doc = build_openapi(title or f"NovaPulse {settings.service_name}", version, routes.items)
        doc_body = jsonstrict.dumps(doc).encode()

        async def openapi_view(_: web.Request) -> web.Response:
            return web.Response(body=doc_body, content_type="application/json")

        app.router.add_get(f"{routes.prefix}/openapi.json", openapi_view)
        for route in sorted(routes.items, key=lambda r: RouteTable.specificity(r.path)):
            app.router.add_route(
                route.method,
                route.path,
                wrap(route, settings, limiter, authenticator),
                name=f"{route.name}_{route.method.lower()}",
            )
    return app
