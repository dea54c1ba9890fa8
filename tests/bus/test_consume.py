"""Consuming with real Redis: delivery, retries and dead letters, malformed entries, duplicates, graceful
stop, tracing, trimming."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from novapulse_devkit.testing import wait_until
from novapulse_runtime.bus import Event, EventBus, PermanentError
from novapulse_runtime.bus.constants import MAX_ENTRY_BYTES
from novapulse_runtime.bus.envelope import encode
from novapulse_runtime.bus.streams import parse_id
from novapulse_runtime.catalog.auth import PasswordChanged, UserRegistered
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings
from tests.bus.conftest import RuntimeFactory, running, user

pytestmark = pytest.mark.integration

BusFactory = Callable[..., EventBus]


async def test_published_events_reach_the_handler_typed(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("notification")
    seen: list[Event] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        seen.append(event)

    async with running(consumer.run):
        sent = [await bus.publish("user.registered", user(i), org_id="o1", subject=f"u{i}") for i in range(20)]
        await wait_until(lambda: len(seen) == 20, timeout=15, message="20 events handled")
    assert sorted(e.id for e in seen) == sorted(e.id for e in sent)
    first = next(e for e in seen if e.id == sent[0].id)
    assert isinstance(first.data, UserRegistered)
    assert (first.type, first.source, first.org_id, first.subject, first.deliveries) == (
        "user.registered",
        "auth",
        "o1",
        "u0",
        1,
    )
    assert consumer.streams() == [bus.keys.stream("auth"), bus.keys.replay("notification")]
    pending = await bus.rt.redis.xpending(bus.keys.stream("auth"), "notification")
    assert pending["pending"] == 0


async def test_patterns_pick_the_most_specific_handler(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("audit")
    got: list[tuple[str, str, bool]] = []

    @consumer.on("user.*")
    async def users(event: Event) -> None:
        got.append(("user.*", event.type, isinstance(event.data, dict)))

    @consumer.on("user.registered")
    async def registered(event: Event) -> None:
        got.append(("exact", event.type, isinstance(event.data, dict)))

    @consumer.on("*")
    async def anything(event: Event) -> None:
        got.append(("*", event.type, isinstance(event.data, dict)))

    async with running(consumer.run):
        await bus.publish("user.registered", user(1), org_id="o1", subject="u1")
        await bus.publish("user.password_changed", PasswordChanged(user_id="u1", org_id="o1"))
        await bus.publish("mfa.enabled", {"user_id": "u1", "org_id": "o1"})
        await wait_until(lambda: len(got) == 3, timeout=15, message="3 events handled")
    assert sorted(got) == [
        ("*", "mfa.enabled", True),
        ("exact", "user.registered", False),
        ("user.*", "user.password_changed", False),
    ]


async def test_poison_event_is_dead_lettered_after_exactly_n_deliveries_then_replayed(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("notification", max_deliveries=3, backoff_base=0.05, backoff_max=0.2)
    calls: Counter[str] = Counter()
    handled: set[str] = set()
    broken = {"u13"}

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        calls[event.subject or ""] += 1
        if event.subject in broken:
            raise RuntimeError(f"cannot handle {event.subject}")
        handled.add(event.subject or "")

    async with running(consumer.run):
        for i in range(20):
            await bus.publish("user.registered", user(i), org_id="o1", subject=f"u{i}")
        await wait_until(lambda: len(handled) == 19, timeout=15, message="19 good events handled")

        async def one_dead() -> bool:
            return await _dead_count(bus) == 1

        await wait_until(one_dead, timeout=15, message="one dead letter")
        page = await bus.operations.dead_letters("notification")
        assert calls["u13"] == 3
        [dead] = page.items
        assert (dead.reason, dead.deliveries, dead.group, dead.type) == (
            "handler_failed",
            3,
            "notification",
            "user.registered",
        )
        assert "cannot handle u13" in dead.error
        assert dead.stream == bus.keys.stream("auth")
        assert json.loads(dead.fields["data"])["user_id"] == "u13"
        assert (await bus.rt.redis.xpending(bus.keys.stream("auth"), "notification"))["pending"] == 0

        broken.clear()
        new_id = await bus.operations.replay(dead.entry_id, "notification")
        assert new_id is not None
        await wait_until(lambda: "u13" in handled, timeout=15, message="replayed event handled")
    assert calls["u13"] == 4
    assert (await bus.operations.dead_letters("notification")).length == 0


async def _dead_count(bus: EventBus) -> int:
    return int(await bus.rt.redis.xlen(bus.keys.dead("notification")))


async def test_malformed_entries_from_an_outside_producer_are_dead_lettered_and_the_consumer_goes_on(
    make_bus: BusFactory,
) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("notification")
    handled: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        handled.append(event.id)

    good = json.dumps(user(1).model_dump())
    base = {
        "id": "0190a0a0-0000-7000-8000-000000000001",
        "type": "user.registered",
        "source": "auth",
        "time": "2026-11-28T12:00:00Z",
        "schema": "1",
        "data": good,
    }
    bad: list[tuple[dict[str, str], str]] = [
        ({k: v for k, v in base.items() if k != "type"}, "malformed"),
        (base | {"data": "{oops"}, "malformed"),
        (base | {"type": "user.teleported"}, "unknown_type"),
        (base | {"data": json.dumps({"user_id": "u1"})}, "invalid_data"),
        (base | {"data": json.dumps({"pad": "x" * (MAX_ENTRY_BYTES + 10)})}, "oversized"),
        (base | {"time": "last tuesday"}, "malformed"),
        ({"hello": "world"}, "malformed"),
    ]
    stream = bus.keys.stream("auth")
    async with running(consumer.run) as stop:
        for fields, _ in bad:
            await bus.rt.redis.xadd(stream, fields)  # type: ignore[arg-type]
        await bus.rt.redis.xadd(stream, base | {"id": "0190a0a0-0000-7000-8000-000000000002"})  # type: ignore[arg-type]
        await wait_until(lambda: len(handled) == 1, timeout=15, message="the good entry handled")

        async def all_dead() -> bool:
            return await _dead_count(bus) == len(bad)

        await wait_until(all_dead, timeout=15, message="all bad entries dead-lettered")
        assert not stop.is_set()
    page = await bus.operations.dead_letters("notification")
    items = sorted(page.items, key=lambda d: parse_id(d.original_entry_id))
    assert [d.reason for d in items] == [reason for _, reason in bad]
    assert items[4].truncated
    assert all(d.deliveries == 1 and d.error for d in items)
    assert (await bus.rt.redis.xpending(stream, "notification"))["pending"] == 0


async def test_duplicates_never_reach_a_handler_twice(make_bus: BusFactory, make_runtime: RuntimeFactory) -> None:
    bus = make_bus("auth")
    other = make_bus("auth", rt=make_runtime("auth"))
    calls: Counter[str] = Counter()

    async def handle(event: Event) -> None:
        calls[event.id] += 1
        await asyncio.sleep(0.01)

    consumers = []
    for b, name in ((bus, "a"), (other, "b")):
        c = b.consumer("notification", name=name, concurrency=8)
        c.add_handler("user.registered", handle)
        consumers.append(c)
    events = [bus.event("user.registered", user(i), org_id="o1", subject=f"u{i}") for i in range(40)]
    async with running(*(c.run for c in consumers)):
        # every event three times: as a relay that crashed before deleting its outbox records would
        for _ in range(3):
            await bus.publish_events(events)
        await wait_until(lambda: len(calls) == 40, timeout=20, message="40 distinct events handled")
        stream = bus.keys.stream("auth")

        async def all_acked() -> bool:
            return int((await bus.rt.redis.xpending(stream, "notification"))["pending"]) == 0

        def duplicates() -> float:
            return float(sum(c.metrics.duplicates.labels(stream, "notification")._value.get() for c in consumers))

        # no pending entry is not enough: the last copies may not be read yet (slower reads on a cluster)
        await wait_until(lambda: duplicates() >= 80, timeout=20, message="80 copies skipped")
        await wait_until(all_acked, timeout=20, message="all 120 entries acknowledged")
    assert set(calls.values()) == {1}
    assert duplicates() == 80


async def test_graceful_stop_finishes_in_flight_handlers_and_acks(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("notification", concurrency=4)
    started: list[str] = []
    finished: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        started.append(event.id)
        await asyncio.sleep(0.5)
        finished.append(event.id)

    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    for i in range(4):
        await bus.publish("user.registered", user(i), subject=f"u{i}")
    await wait_until(lambda: len(started) == 4, timeout=15, message="4 handlers in flight")
    stop.set()
    await asyncio.wait_for(task, timeout=15)
    assert sorted(finished) == sorted(started)
    assert (await bus.rt.redis.xpending(bus.keys.stream("auth"), "notification"))["pending"] == 0


async def test_a_trace_continues_from_publish_to_handler(make_runtime: RuntimeFactory, names: str) -> None:
    exporter = InMemorySpanExporter()
    rt = make_runtime("auth", exporter=exporter)
    bus = EventBus(rt, namespace=names)
    consumer = bus.consumer("notification")
    seen: list[tuple[int, str | None]] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        seen.append((trace.get_current_span().get_span_context().trace_id, event.traceparent))

    async with running(consumer.run):
        with rt.tracer.start_as_current_span("request") as root:
            sent = await bus.publish("user.registered", user(1), subject="u1")
        await wait_until(lambda: len(seen) == 1, timeout=15, message="event handled")
    rt.tracing.provider.force_flush()
    spans = exporter.get_finished_spans()
    producer = next(s for s in spans if s.kind is SpanKind.PRODUCER)
    consumer_span = next(s for s in spans if s.kind is SpanKind.CONSUMER)
    trace_id = root.get_span_context().trace_id
    assert producer.context is not None
    assert consumer_span.context is not None
    assert producer.context.trace_id == consumer_span.context.trace_id == trace_id == seen[0][0]
    assert consumer_span.parent is not None
    assert consumer_span.parent.span_id == producer.context.span_id
    assert seen[0][1] is not None
    assert f"{trace_id:032x}" in seen[0][1]
    stream = bus.keys.stream("auth")
    assert dict(producer.attributes or {}) == {
        "messaging.system": "redis",
        "messaging.destination.name": stream,
        "messaging.operation.type": "send",
        "messaging.message.id": sent.id,
    }
    attrs = dict(consumer_span.attributes or {})
    assert attrs["messaging.consumer.group.name"] == "notification"
    assert attrs["messaging.message.id"] == sent.id
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.destination.name"] == stream


async def test_trimming_never_drops_entries_a_group_has_not_read(make_bus: BusFactory) -> None:
    bus = make_bus("auth", stream_maxlen=50)
    bus.publisher.trim_interval = 0.0
    stream = bus.stream()
    await bus.rt.redis.xgroup_create(stream, "slow", id="0", mkstream=True)
    for _ in range(5):
        await bus.publish_events([bus.event("mfa.enabled", {"user_id": "u", "org_id": "o"}) for _ in range(100)])
    assert await bus.rt.redis.xlen(stream) == 500  # nothing read yet: nothing trimmed
    consumer = bus.consumer("slow")
    handled: list[str] = []

    @consumer.on("mfa.enabled")
    async def handle(event: Event) -> None:
        handled.append(event.id)

    async with running(consumer.run):
        await wait_until(lambda: len(handled) == 500, timeout=20, message="500 handled")

        async def acked() -> bool:
            return int((await bus.rt.redis.xpending(stream, "slow"))["pending"]) == 0

        await wait_until(acked, timeout=15, message="all acknowledged")
    await bus.publish_events([bus.event("mfa.enabled", {"user_id": "u", "org_id": "o"}) for _ in range(10)])
    length = int(await bus.rt.redis.xlen(stream))
    assert 10 <= length < 200  # read entries trimmed (approximately: whole radix-tree nodes), new ones kept
    await bus.rt.redis.xgroup_create(stream, "late", id="$")
    entries: list[Any] = await bus.rt.redis.xrange(stream, count=1000) or []
    assert len(entries) == length


async def test_a_trace_continues_through_the_outbox_and_batches(make_runtime: RuntimeFactory, names: str) -> None:
    exporter = InMemorySpanExporter()
    rt = make_runtime("auth", exporter=exporter)
    bus = EventBus(rt, namespace=names)
    outbox = bus.outbox()
    consumer = bus.consumer("notification")
    seen: dict[str, int] = {}

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        seen[event.id] = trace.get_current_span().get_span_context().trace_id

    async with running(outbox.relay, consumer.run):
        with rt.tracer.start_as_current_span("request") as request_span:
            async with outbox.transaction() as session:
                via_outbox = await outbox.add("user.registered", user(1), subject="u1", session=session)
        with rt.tracer.start_as_current_span("batch job") as batch_span:
            batch = [bus.event("user.registered", user(i), subject=f"u{i}") for i in range(2, 5)]
            await bus.publish_events(batch)
        await wait_until(lambda: len(seen) == 4, timeout=15, message="4 events handled")
    assert seen[via_outbox.id] == request_span.get_span_context().trace_id
    assert {seen[e.id] for e in batch} == {batch_span.get_span_context().trace_id}
    rt.tracing.provider.force_flush()
    spans = exporter.get_finished_spans()
    create = next(s for s in spans if s.name.startswith("create "))
    send = next(s for s in spans if s.name.startswith("send "))
    assert (send.attributes or {})["messaging.batch.message_count"] == 3
    consumers = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert create.context is not None
    assert send.context is not None
    parents = sorted(s.parent.span_id for s in consumers if s.parent is not None)
    assert parents == sorted([create.context.span_id] + [send.context.span_id] * 3)


async def test_without_an_exporter_the_context_still_travels(make_runtime: RuntimeFactory, names: str) -> None:
    rt = make_runtime("auth")  # no span exporter: nothing is recorded, the trace id must still reach handlers
    bus = EventBus(rt, namespace=names)
    consumer = bus.consumer("notification")
    seen: list[int] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)

    async with running(consumer.run):
        with rt.tracer.start_as_current_span("request") as root:
            sent = await bus.publish("user.registered", user(1), subject="u1")
        await wait_until(lambda: len(seen) == 1, timeout=15, message="event handled")
    assert sent.traceparent is not None
    assert f"{root.get_span_context().trace_id:032x}" in sent.traceparent
    entries: list[Any] = await rt.redis.xrange(bus.stream()) or []
    assert f"{root.get_span_context().trace_id:032x}" in entries[0][1]["traceparent"]
    assert seen == [root.get_span_context().trace_id]


async def test_permanent_error_is_dead_lettered_at_once(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("notification", max_deliveries=5, backoff_base=0.05, backoff_max=0.2)
    calls: Counter[str] = Counter()

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        calls[event.subject or ""] += 1
        raise PermanentError("no such template")

    async with running(consumer.run):
        await bus.publish("user.registered", user(1), org_id="o1", subject="u1")

        async def one_dead() -> bool:
            return await _dead_count(bus) == 1

        await wait_until(one_dead, timeout=15, message="one dead letter")
        [dead] = (await bus.operations.dead_letters("notification")).items
    assert calls["u1"] == 1
    assert (dead.reason, dead.deliveries) == ("rejected", 1)
    assert "no such template" in dead.error


async def test_a_handler_past_its_timeout_is_cancelled_retried_then_dead_lettered(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer(
        "notification", handler_timeout=0.3, max_deliveries=2, backoff_base=0.05, backoff_max=0.1, concurrency=4
    )
    cancelled: list[str] = []
    fast: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        if event.subject == "fast":  # a handler beside the slow one is not disturbed
            fast.append(event.id)
            return
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(event.id)
            raise

    async with running(consumer.run) as stop:
        await bus.publish("user.registered", user(1), org_id="o1", subject="slow")
        await bus.publish("user.registered", user(2), org_id="o1", subject="fast")

        async def one_dead() -> bool:
            return await _dead_count(bus) == 1

        await wait_until(one_dead, timeout=15, message="the slow event dead-lettered")
        [dead] = (await bus.operations.dead_letters("notification")).items
        assert not stop.is_set()  # the consumer goes on
    assert (dead.reason, dead.deliveries) == ("timeout", 2)
    assert "timed out after 0.3s" in dead.error
    assert len(cancelled) == 2  # each delivery's run was cancelled, not left running
    assert len(fast) == 1
    assert not consumer._deadlines
    assert not consumer._expired


async def test_a_stop_does_not_wait_for_an_overrunning_handler_beyond_its_timeout(make_bus: BusFactory) -> None:
    """Timeouts are still enforced while a stopping consumer waits for its in-flight handlers: the stop ends
    once the overrunning handler is cancelled, and its entry stays pending for another consumer."""
    bus = make_bus("auth")
    consumer = bus.consumer("notification", handler_timeout=0.5)
    started = asyncio.Event()

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        started.set()
        await asyncio.sleep(3600)

    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await bus.publish("user.registered", user(1), org_id="o1", subject="u1")
    await asyncio.wait_for(started.wait(), timeout=15)
    stop.set()
    await asyncio.wait_for(task, timeout=15)  # without the timeout it would wait handler_timeout + 2 s, then cancel
    assert (await bus.rt.redis.xpending(bus.keys.stream("auth"), "notification"))["pending"] == 1
    assert await _dead_count(bus) == 0


async def test_a_handler_that_swallows_the_timeout_and_returns_counts_as_handled(make_bus: BusFactory) -> None:
    """As with ``asyncio.timeout``: a handler that catches the cancellation and returns normally succeeded."""
    bus = make_bus("auth")
    consumer = bus.consumer("notification", handler_timeout=0.2)
    finished: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        finished.append(event.id)

    async with running(consumer.run):
        await bus.publish("user.registered", user(1), org_id="o1", subject="u1")
        await wait_until(lambda: len(finished) == 1, timeout=15, message="the handler returned")

        async def acked() -> bool:
            return bool((await bus.rt.redis.xpending(bus.keys.stream("auth"), "notification"))["pending"] == 0)

        await wait_until(acked, timeout=15, message="acknowledged")
    assert await _dead_count(bus) == 0


async def test_handlers_that_finish_at_once_and_handlers_that_wait_both_run_as_in_their_own_task(
    make_bus: BusFactory,
) -> None:
    """Handlers start eagerly (no task until they first wait): each still runs in a context of its own, and an
    ``asyncio.timeout`` a handler enters before it first waits cancels that handler, never the consumer."""
    bus = make_bus("auth")
    consumer = bus.consumer("notification", concurrency=8)
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="")
    leaked: list[str] = []
    done: list[str] = []
    timed_out: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        if marker.get():
            leaked.append(marker.get())
        marker.set(event.id)  # set and never reset: must not reach the next handler
        if event.subject == "bounded":
            try:
                async with asyncio.timeout(0.05):
                    await asyncio.sleep(30)
            except TimeoutError:
                timed_out.append(event.id)
        elif event.subject == "waits":
            await asyncio.sleep(0.01)
        done.append(event.id)

    async with running(consumer.run) as stop:
        for i in range(30):
            await bus.publish("user.registered", user(i), org_id="o1", subject=("at-once", "waits", "bounded")[i % 3])
        await wait_until(lambda: len(done) == 30, timeout=15, message="30 events handled")

        async def acked() -> bool:
            return bool((await bus.rt.redis.xpending(bus.keys.stream("auth"), "notification"))["pending"] == 0)

        await wait_until(acked, timeout=15, message="all acknowledged")
        assert not stop.is_set()
    assert leaked == []
    assert len(timed_out) == 10
    assert not consumer._tasks
    assert not consumer.held
    assert not consumer._deadlines  # a handler that finished at once was never tracked, one that waited is no more
    # each success counted once, whether added per batch (finished at once) or on its own (finished later)
    labels = {"stream": bus.keys.stream("auth"), "group": "notification", "type": "user.registered"}
    registry = bus.rt.metrics.registry
    assert registry.get_sample_value("novapulse_events_consumed_total", labels) == 30
    durations = {"group": "notification", "type": "user.registered"}
    assert registry.get_sample_value("novapulse_event_handler_duration_seconds_count", durations) == 30


async def test_consumer_spans_follow_the_parent_based_ratio_sampler(redis_url: str, mongo_url: str, names: str) -> None:
    """The chart's sampling (parent-based, ratio 0 for new traces here): a sampled caller's event gets an
    exported consumer span; an unsampled caller's event and a new trace get none, yet the handler still runs
    in the trace (the caller's trace id, a span id of its own, the unsampled flag, the caller's trace state)."""
    exporter = InMemorySpanExporter()
    settings = ServiceSettings(
        service_name="auth",
        redis_url=redis_url,
        mongo_url=mongo_url,
        mongo_db=f"{names}_auth"[:60],
        otel_traces_sampler="parentbased_traceidratio",
        otel_traces_sampler_arg=0.0,
    )
    rt = Runtime(settings, role="worker", span_exporter=exporter)
    try:
        bus = EventBus(rt, namespace=names)
        consumer = bus.consumer("notification")
        seen: dict[str, Any] = {}

        @consumer.on("user.registered")
        async def handle(event: Event) -> None:
            seen[event.subject or ""] = trace.get_current_span().get_span_context()

        sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        unsampled = "00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-00"
        async with running(consumer.run):
            for subject, parent, state in (
                ("sampled", sampled, None),
                ("unsampled", unsampled, "vendor=x"),
                ("new", None, None),
            ):
                fields = encode(bus.event("user.registered", user(1), subject=subject), parent, state)
                await rt.redis.xadd(bus.keys.stream("auth"), fields)  # type: ignore[arg-type]
            await wait_until(lambda: len(seen) == 3, timeout=15, message="3 events handled")
        rt.tracing.provider.force_flush()
        exported = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
        assert [s.context.trace_id for s in exported if s.context is not None] == [0x0AF7651916CD43DD8448EB211C80319C]
        assert seen["sampled"].trace_flags.sampled
        quiet = seen["unsampled"]
        assert (quiet.trace_id, quiet.trace_flags.sampled, quiet.is_remote) == (
            0x1AF7651916CD43DD8448EB211C80319C,
            False,
            False,
        )
        assert quiet.span_id not in (0, 0xC7AD6B7169203331)
        assert quiet.trace_state.get("vendor") == "x"
        assert seen["new"].is_valid
        assert not seen["new"].trace_flags.sampled
    finally:
        await rt.close()
