"""One trace per run: the run's span (a child of the trigger event's trace, or of the request that started
the run) is stored in the run as a W3C ``traceparent``; every pass over the run continues it, with a span
per step attempt, so the events a step emits carry the run's trace too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace

from novapulse_runtime.bus.tracing import extract, inject

TRACER = trace.get_tracer("novapulse.workflow")
"""The service's tracer (the process's provider, set up by the runtime; a no-op one in unit tests)."""


@contextmanager
def run_span(org_id: str, definition_id: str, version: int) -> Iterator[tuple[trace.Span, str]]:
    """Open the span of a run about to be inserted, as a child of the current context, and give it with its
    ``traceparent`` (``""`` outside any trace). The span ends when the block does — a run outlives any one
    process — and the steps' spans hang under it through the stored ``traceparent``."""
    attributes: dict[str, str | int] = {
        "workflow.org_id": org_id,
        "workflow.definition_id": definition_id,
        "workflow.version": version,
    }
    with TRACER.start_as_current_span("workflow run", attributes=attributes) as span:
        traceparent, _ = inject(span)
        yield span, traceparent or ""


@contextmanager
def in_run_trace(traceparent: str) -> Iterator[None]:
    """Make the run's span (from its stored ``traceparent``) the current parent for the block: a pass of
    the engine, so its step spans, database spans and lifecycle events join the run's trace."""
    parent = extract(traceparent or None, None)
    if parent is None:
        yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)
