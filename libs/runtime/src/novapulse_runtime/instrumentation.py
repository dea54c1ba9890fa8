"""Which outgoing calls get an OpenTelemetry client span of their own (the instrumentation set-up).

- Outgoing HTTP (aiohttp client): always. Its instrumentation also writes ``traceparent`` on every request
  this process sends, so a trace goes on into the next service.
- Each MongoDB command (pymongo) and each Redis command (redis-py): only when ``TRACE_DATABASE_SPANS`` says
  so (``on``, ``off``, ``auto``). ``auto``, the default, instruments them when spans leave the process (an OTLP
  endpoint or an exporter is configured): a span nobody receives costs the event loop its instrumentation
  (~0.1 ms of CPU per command on the development machine) and serves nobody. Trace ids in log lines and
  ``traceparent`` on events and outgoing requests come from the server and consumer spans, not from these.

Instrumentations that are not set up are not imported (they add to the process's memory).
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from .settings import DatabaseSpans

log = logging.getLogger(__name__)


def database_spans_wanted(setting: DatabaseSpans, exporting: bool) -> bool:
    """Whether MongoDB and Redis commands get client spans: ``setting`` (``TRACE_DATABASE_SPANS``) resolved
    against ``exporting`` (spans leave the process)."""
    return setting == "on" or (setting == "auto" and exporting)


def instrument(provider: TracerProvider, *, databases: bool) -> list[str]:
    """Make ``provider`` the global tracer provider and instrument the aiohttp client, plus pymongo and
    redis when ``databases``. Instrumentations are process-wide and set up once: a second call adds what the
    first left out and never removes one. An instrumentation that fails is logged as a warning and skipped
    (it must never stop the process). Returns the names instrumented by this call."""
    trace.set_tracer_provider(provider)
    wanted: list[tuple[str, Any]] = [("aiohttp-client", _aiohttp_client)]
    if databases:
        wanted += [("pymongo", _pymongo), ("redis", _redis)]
    done = []
    for name, load in wanted:
        try:
            instrumentor = load()
            if instrumentor.is_instrumented_by_opentelemetry:
                continue
            instrumentor.instrument(tracer_provider=provider)
            done.append(name)
        except Exception:  # an instrumentation must never stop the process
            log.warning("instrumentation failed", extra={"instrumentor": name}, exc_info=True)
    return done


def _aiohttp_client() -> Any:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    return AioHttpClientInstrumentor()


def _pymongo() -> Any:
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    return PymongoInstrumentor()


def _redis() -> Any:
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    return RedisInstrumentor()
