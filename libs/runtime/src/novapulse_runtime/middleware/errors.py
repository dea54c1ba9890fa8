"""Errors as RFC 9457 problems: whatever fails below this middleware, the caller gets
``application/problem+json`` with the right status, never a stack trace.

- :class:`~novapulse_runtime.problems.ProblemError` → its status and fields;
- aiohttp's HTTP exceptions → problem+json (a 405 carries ``Allow`` from the declared routes, RFC 9110 §15.5.6);
- a pydantic ``ValidationError`` (a model built inside a handler from outside data) → 422;
- an unreachable MongoDB or Redis (:func:`unavailable_dependency`) → 503 with ``Retry-After``, a warning log
  line and ``novapulse_http_dependency_unavailable_total{dependency}``;
- anything else → 500 with the request id (the stack trace goes to the log only).

Domain errors are answered one layer lower, by the route wrapper, with the service's table (:mod:`..errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from pymongo.errors import ConnectionFailure as MongoConnectionFailure
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..metrics import Metrics
from ..parsing import validation_errors
from ..problems import DEPENDENCY_RETRY_AFTER, ProblemError, from_error, problem_response
from ..routes import RouteTable
from .request_id import REQUEST_ID_KEY

log = logging.getLogger("novapulse.http")


def unavailable_dependency(exc: BaseException) -> str | None:
    """``"MongoDB"`` or ``"Redis"`` when ``exc`` (or an exception it was raised from) says that dependency is
    unreachable: pymongo's ``ConnectionFailure`` family (``AutoReconnect``, ``NetworkTimeout``,
    ``ServerSelectionTimeoutError``, ``WaitQueueTimeoutError``) or redis' ``ConnectionError`` / ``TimeoutError``.
    ``None`` for anything else (a bug, answered 500)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MongoConnectionFailure):
            return "MongoDB"
        if isinstance(current, RedisConnectionError | RedisTimeoutError):
            return "Redis"
        current = current.__cause__ or current.__context__
    return None


def error_middleware(metrics: Metrics, table: RouteTable | None = None) -> Any:
    """The middleware answering every failure below it as a problem; ``table`` (the declared routes)
    answers ``OPTIONS`` and fills ``Allow`` of a 405."""
    unavailable = metrics.http_dependency_unavailable

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            options = table.check(request.method, request.path) if table is not None else None
            return options if options is not None else await handler(request)
        except ProblemError as err:
            return from_error(err, instance=request.path)
        except web.HTTPException as exc:
            return _problem_from_http(exc, request, table)
        except ValidationError as exc:
            return problem_response(422, "Invalid data", errors=validation_errors(exc, "body"))
        except Exception as exc:
            rid = request.get(REQUEST_ID_KEY, "")
            dependency = unavailable_dependency(exc)
            if dependency is None:
                log.exception("unhandled error", extra={"path": request.path, "method": request.method})
                return problem_response(500, "An internal error occurred; quote the request id.", request_id=rid)
            unavailable.labels(dependency).inc()
            log.warning(
                "dependency unavailable",
                extra={
                    "dependency": dependency,
                    "error": type(exc).__name__,
                    "path": request.path,
                    "method": request.method,
                },
            )
            return problem_response(
                503,
                f"{dependency} is unreachable; retry in {DEPENDENCY_RETRY_AFTER} seconds.",
                headers={"Retry-After": str(DEPENDENCY_RETRY_AFTER)},
                instance=request.path,
                request_id=rid,
            )

    return middleware


def _problem_from_http(exc: web.HTTPException, request: web.Request, table: RouteTable | None) -> web.Response:
    if exc.status < 400:  # redirects raised as exceptions pass through
        return web.Response(status=exc.status, headers=exc.headers)
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    if exc.status == 405 and table is not None:
        declared = table.allowed(request.path)
        if declared:
            headers["Allow"] = ", ".join(declared)
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
