"""The middleware every process wraps its requests in, one concern per module, outermost first:

1. :mod:`.request_id` — the request id (``X-Request-ID``): taken from a well-formed header or made, set for
   log lines, echoed on every response;
2. :mod:`.telemetry` — the server span (W3C trace context), request metrics by route template and the
   access log line;
3. :mod:`.errors` — every failure becomes an RFC 9457 problem (never a stack trace), so the layers above
   always see a response with its final status.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from ..metrics import Metrics
from ..routes import RouteTable
from .errors import error_middleware, unavailable_dependency
from .request_id import request_id_middleware
from .telemetry import telemetry_middleware

__all__ = ["middlewares", "unavailable_dependency"]


def middlewares(metrics: Metrics, tracer: trace.Tracer, table: RouteTable | None = None) -> list[Any]:
    """The middleware list of a process's application, outermost first."""
    return [request_id_middleware, telemetry_middleware(metrics, tracer), error_middleware(metrics, table)]
