"""One trace per run: the run's span is a child of the trigger event's trace, each step attempt's span a child
of the run's span, and the events a step emits carry that trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers_workflow import FakeEffects
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from novapulse_devkit.testing import wait_until
from novapulse_runtime.bus.tracing import inject_current
from novapulse_workflow.engine import Engine
from novapulse_workflow.language import Definition
from novapulse_workflow.repository import Repository
from novapulse_workflow.triggers import Triggers

pytestmark = pytest.mark.integration

BODY = {
    "name": "Traced",
    "trigger": {"type": "user.registered"},
    "steps": [
        {"key": "check", "type": "condition", "branches": [{"when": "`false`", "next": "end"}]},
        {"key": "tell", "type": "emit", "event_type": "app.told", "data": {}},
    ],
}


class TracedEffects(FakeEffects):
    """Also records the ``traceparent`` current when each effect is published."""

    def __init__(self) -> None:
        super().__init__()
        self.traceparents: dict[str, str | None] = {}

    async def publish(self, type_: str, data: dict[str, object], *, org_id: str, subject: str, event_id: str) -> None:
        self.traceparents[type_] = inject_current()[0]
        await super().publish(type_, data, org_id=org_id, subject=subject, event_id=event_id)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans of this test, from the process's SDK provider (set here when no runtime set one before)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()


async def test_a_run_is_one_trace_under_its_trigger(repo: Repository, spans: InMemorySpanExporter) -> None:
    defn = Definition.model_validate(BODY)
    await repo.insert_definition("o1", "u", defn.model_dump(mode="json", exclude_none=True), "user.registered")
    effects = TracedEffects()
    triggers = Triggers(repo, effects)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("trigger event") as trigger_span:
        [run] = await triggers.on_event(
            {"id": "e1", "type": "user.registered", "source": "auth", "org_id": "o1", "data": {"user_id": "u"}}
        )
    trace_id = trigger_span.get_span_context().trace_id
    engine = Engine(repo, effects, "w1", 5000)

    async def done() -> bool:
        claimed = await repo.claim_due("w1", 5000)
        if claimed is not None:
            await engine.execute(claimed)
        got = await repo.get_run("o1", run.id)
        return got is not None and got.status == "completed"

    await wait_until(done, timeout=10, message="run completed")
    finished = spans.get_finished_spans()
    [run_span] = [s for s in finished if s.name == "workflow run"]
    assert run_span.parent is not None
    assert run_span.parent.span_id == trigger_span.get_span_context().span_id
    assert run_span.attributes is not None
    assert run_span.attributes["workflow.run_id"] == run.id
    steps = [s for s in finished if s.name.startswith("workflow step")]
    assert [(s.name, (s.attributes or {})["workflow.step"]) for s in steps] == [
        ("workflow step condition", "check"),
        ("workflow step emit", "tell"),
    ]
    for s in steps:
        assert s.context is not None
        assert s.context.trace_id == trace_id
        assert s.parent is not None
        assert s.parent.span_id == run_span.context.span_id
    [ended] = [s for s in finished if s.name == "workflow run ended"]
    assert ended.parent is not None
    assert ended.parent.span_id == run_span.context.span_id
    assert (ended.attributes or {})["workflow.status"] == "completed"
    assert ended.start_time is not None
    assert ended.start_time == run.created_ms * 1_000_000  # the run's lifetime: from its creation to its end
    # the emitted event carries the step's span, in the run's trace
    emitted = effects.traceparents["workflow.emitted"]
    assert emitted is not None
    assert emitted.split("-")[1] == f"{trace_id:032x}"
    assert emitted.split("-")[2] == f"{steps[1].context.span_id:016x}"
    # the lifecycle events too
    assert (effects.traceparents["workflow.run.completed"] or "").split("-")[1] == f"{trace_id:032x}"
