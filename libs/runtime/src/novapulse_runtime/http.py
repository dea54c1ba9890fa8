"""The aiohttp application factory every process uses.

It serves the probe and metrics paths, the service's declared routes and its OpenAPI document, and wraps
every request in the same middleware: request id, server span, structured log line, metrics by route
template, and RFC 9457 errors (never a stack trace).
"""

from __future__ import annotations

import inspect
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import BaseModel, ValidationError

from .constants import HEALTH_PATH, LIVE_PATH, METRICS_PATH, PROBE_PATHS, READY_PATH, REQUEST_ID_HEADER
from .health import Health
from .logs import request_id_var
from .metrics import Metrics
from .openapi import build_openapi
from .operators import require_operator
from .problems import ProblemError, from_error, problem_response
from .ratelimit import RateLimiter, client_key
from .routes import Route, Routes, json_response
from .settings import ServiceSettings
from .tokens import PRINCIPAL_KEY

log = logging.getLogger("novapulse.http")

Authenticator = Callable[[web.Request], Awaitable[Any]]

SETTINGS_KEY = web.AppKey("settings", ServiceSettings)
METRICS_KEY = web.AppKey("metrics", Metrics)
HEALTH_KEY = web.AppKey("health", Health)

_MAX_REQUEST_ID = 128


def _request_id(request: web.Request) -> str:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    if 0 < len(incoming) <= _MAX_REQUEST_ID and incoming.isprintable() and incoming.isascii():
        return incoming
    return uuid.uuid4().hex


def _route_template(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    return info.route.resource.canonical


def _validation_errors(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    return [
        {"location": where, "field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def build_middleware(metrics: Metrics, tracer: trace.Tracer) -> Any:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        rid = _request_id(request)
        token = request_id_var.set(rid)
        route = _route_template(request)
        started = time.perf_counter()
        probe = request.path in PROBE_PATHS
        ctx = propagate.extract(dict(request.headers))
        metrics.http_in_flight.inc()
        with tracer.start_as_current_span(
            f"{request.method} {route}",
            context=ctx,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "url.path": request.path,
                "http.route": route,
                "client.address": request.remote or "",
            },
        ) as span:
            try:
                try:
                    response = await handler(request)
                except ProblemError as err:
                    response = from_error(err, instance=request.path)
                except web.HTTPException as exc:
                    response = _problem_from_http(exc, request)
                except ValidationError as exc:  # a model built inside a handler from outside data
                    response = problem_response(422, "Invalid data", errors=_validation_errors(exc, "body"))
                except Exception:
                    log.exception("unhandled error", extra={"path": request.path, "method": request.method})
                    response = problem_response(
                        500, "An internal error occurred; quote the request id.", request_id=rid
                    )
                response.headers[REQUEST_ID_HEADER] = rid
                span.set_attribute("http.response.status_code", response.status)
                if response.status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                return response
            finally:
                elapsed = time.perf_counter() - started
                metrics.http_in_flight.dec()
                status = str(getattr(locals().get("response"), "status", 500))
                metrics.http_requests.labels(request.method, route, status).inc()
                metrics.http_latency.labels(request.method, route).observe(elapsed)
                if not probe:
                    log.info(
                        "request",
                        extra={
                            "method": request.method,
                            "path": request.path,
                            "route": route,
                            "status": int(status),
                            "duration_ms": round(elapsed * 1000, 2),
                        },
                    )
                request_id_var.reset(token)

    return middleware


def _problem_from_http(exc: web.HTTPException, request: web.Request) -> web.Response:
    if exc.status < 400:  # redirects raised as exceptions pass through
        return web.Response(status=exc.status, headers=exc.headers)
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    detail = None
    if exc.status == 404:
        detail = f"No route for {request.path}"
    elif exc.status == 405:
        detail = f"{request.method} is not allowed here"
    elif exc.status == 413:
        detail = "The request body is too large"
    elif exc.text and not exc.text.startswith(f"{exc.status}:"):
        detail = exc.text
    return problem_response(exc.status, detail, headers=headers, instance=request.path)


async def _parse_body(request: web.Request, model: type[BaseModel], max_bytes: int) -> BaseModel:
    if request.content_length is not None and request.content_length > max_bytes:
        raise ProblemError(413, f"The request body exceeds {max_bytes} bytes")
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise ProblemError(415, "Send the body as application/json")
    raw = await request.read()  # aiohttp enforces client_max_size while reading (413)
    # pydantic's own JSON parser: bounded nesting depth and no lone surrogates, so hostile JSON is a 4xx
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise ProblemError(400, f"The body is not valid JSON: {errors[0]['msg']}") from exc
        raise ProblemError(422, "The request body is invalid", errors=_validation_errors(exc, "body")) from exc


def _parse_query(request: web.Request, model: type[BaseModel]) -> BaseModel:
    raw: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        field = model.model_fields.get(key)
        is_list = field is not None and "list" in str(field.annotation).lower()
        raw[key] = values if is_list else values[-1]
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ProblemError(422, "The query string is invalid", errors=_validation_errors(exc, "query")) from exc


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
        body = await _parse_body(request, route.body, settings.max_body_bytes) if route.body else None
        if wants_body:
            kwargs["body"] = body
        if route.query is not None:
            query = _parse_query(request, route.query)
            if wants_query:
                kwargs["query"] = query
        headers: dict[str, str] = {}
        if limiter is not None and route.rate_limits:
            headers = await _check_limits(route, request, body, settings, limiter)
        result = await route.handler(request, **kwargs)
        if isinstance(result, web.StreamResponse):
            response = result
        elif result is None:
            response = web.Response(status=204)
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
    """Build the process's aiohttp application."""
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[build_middleware(metrics, tracer)])
    app[SETTINGS_KEY] = settings
    app[METRICS_KEY] = metrics
    app[HEALTH_KEY] = health

    async def health_view(_: web.Request) -> web.Response:
        ok, report = await health.report()
        report["service"] = settings.service_name
        return web.json_response(report, status=200 if ok else 503)

    async def live_view(_: web.Request) -> web.Response:
        return web.json_response({"status": "up"})

    async def ready_view(_: web.Request) -> web.Response:
        ok, report = await health.report(required_only=True)
        return web.json_response(
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
        doc_body = json.dumps(doc).encode()

        async def openapi_view(_: web.Request) -> web.Response:
            return web.Response(body=doc_body, content_type="application/json")

        app.router.add_get(f"{routes.prefix}/openapi.json", openapi_view)
        for route in routes.items:
            app.router.add_route(
                route.method,
                route.path,
                wrap(route, settings, limiter, authenticator),
                name=f"{route.name}_{route.method.lower()}",
            )
    return app
