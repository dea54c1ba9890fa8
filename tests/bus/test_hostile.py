"""Hostile entries written with a raw Redis client: bytes that are not UTF-8, JSON that is not strict or
nests 60 000 levels deep, events that break the bus contract (wrong stream, wrong source, data that does not
validate, another organisation's data), foreign values in the idempotency keys, foreign consumer and group
names, handlers that raise BaseException-like errors. Each must end in the right dead-letter reason (or be
shrugged off), and the consumer must go on to handle the next good event."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from novapulse_devkit.testing import wait_until
from novapulse_runtime.bus import Consumer, Event, EventBus
from novapulse_runtime.bus.streams import parse_id
from novapulse_runtime.redisconn import connect_redis
from tests.bus.conftest import running, user

pytestmark = pytest.mark.integration

BusFactory = Callable[..., EventBus]
GOOD_ID = "0190a0a0-0000-7000-8000-00000000{:04d}"


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Any]:
    """A plain client that writes and reads bytes, as any outside producer could."""
    client = connect_redis(redis_url, socket_timeout=10.0, decode_responses=False)  # a cluster too
    yield client
    await client.aclose()


def envelope(n: int, **over: Any) -> dict[Any, Any]:
    fields: dict[Any, Any] = {
        "id": GOOD_ID.format(n),
        "type": "user.registered",
        "source": "auth",
        "time": "2026-11-30T00:00:00Z",
        "schema": "1",
        "org_id": "o1",
        "data": json.dumps(user(n).model_dump()),
    }
    fields.update(over)
    return {k: v for k, v in fields.items() if v is not None}


async def dead_letters(raw: Any, bus: EventBus, group: str, count: int) -> list[dict[bytes, bytes]]:
    """Wait for ``count`` dead letters of ``group``; their raw fields in original-entry order."""
    stream = bus.keys.dead(group)

    async def enough() -> bool:
        return int(await raw.xlen(stream)) >= count

    await wait_until(enough, timeout=20, message=f"{count} dead letters")
    entries = await raw.xrange(stream)
    assert len(entries) == count
    return sorted((f for _, f in entries), key=lambda f: parse_id(f[b"dead_entry_id"].decode()))


async def no_pending(raw: Any, stream: str, group: str) -> None:
    async def done() -> bool:
        return int((await raw.xpending(stream, group))["pending"]) == 0

    await wait_until(done, timeout=20, message="nothing pending")


def typed_and_catch_all(bus: EventBus, handled: list[tuple[str, str]]) -> list[Consumer]:
    """The two kinds of consumer: a typed handler (like notification) and a ``*`` handler (like webhook)."""
    typed = bus.consumer("notification")
    typed.add_handler("user.registered", _recorder("notification", handled))
    typed.add_handler("notification.requested", _recorder("notification", handled))  # reads the workflow stream
    catch_all = bus.consumer("webhook")
    catch_all.add_handler("*", _recorder("webhook", handled))
    return [typed, catch_all]


def _recorder(group: str, handled: list[tuple[str, str]]) -> Callable[[Event], Any]:
    async def handle(event: Event) -> None:
        handled.append((group, event.id))

    return handle


async def test_entries_that_are_not_utf8_are_dead_lettered_byte_for_byte_and_the_consumer_goes_on(
    make_bus: BusFactory, raw: Any
) -> None:
    bus = make_bus("auth")
    handled: list[tuple[str, str]] = []
    consumers = typed_and_catch_all(bus, handled)
    stream = bus.keys.stream("auth")
    async with running(*(c.run for c in consumers)) as stop:
        await raw.xadd(stream, envelope(1, data=b"\xff"))  # the XADD
        await raw.xadd(stream, envelope(2) | {b"n\xfeme": b"x"})  # a field name
        await raw.xadd(stream, envelope(3, type=b"user.\xc3("))  # the type
        await raw.xadd(stream, envelope(4))
        await wait_until(lambda: len(handled) == 2, timeout=20, message="the good event handled by both groups")
        for group in ("notification", "webhook"):
            dead = await dead_letters(raw, bus, group, 3)
            assert [d[b"dead_reason"] for d in dead] == [b"malformed"] * 3
            assert b"not UTF-8" in dead[0][b"dead_error"]
            assert dead[0][b"data"] == b"\xff"  # kept as it came, for the operator
            assert dead[1][b"n\xfeme"] == b"x"
            await no_pending(raw, stream, group)
        assert not stop.is_set()
    assert sorted(handled) == [("notification", GOOD_ID.format(4)), ("webhook", GOOD_ID.format(4))]


async def test_json_that_is_not_strict_or_nests_60000_deep_is_malformed_at_once(make_bus: BusFactory, raw: Any) -> None:
    bus = make_bus("auth")
    handled: list[tuple[str, str]] = []
    consumers = typed_and_catch_all(bus, handled)
    stream = bus.keys.stream("auth")
    good = user(1).model_dump()
    deep = "[" * 60_000 + "]" * 60_000  # 120 KB, under the size limit
    hostile = [
        '{"user_id": "u1", "pad": ' + deep + "}",
        json.dumps(good | {"score": 1.0}).replace("1.0", "NaN"),
        json.dumps(good | {"score": 1.0}).replace("1.0", "Infinity"),
        json.dumps(good | {"score": 1.0}).replace("1.0", "-Infinity"),
        json.dumps(good | {"score": 1.0}).replace("1.0", "1e999"),
        json.dumps(good | {"name": "x"}).replace('"x"', '"\\ud800"'),
    ]
    async with running(*(c.run for c in consumers)):
        for n, data in enumerate(hostile):
            await raw.xadd(stream, envelope(n, data=data))
        await raw.xadd(stream, envelope(99))
        await wait_until(lambda: len(handled) == 2, timeout=20, message="the good event handled by both groups")
        for group in ("notification", "webhook"):
            dead = await dead_letters(raw, bus, group, len(hostile))
            assert [(d[b"dead_reason"], d[b"dead_deliveries"]) for d in dead] == [(b"malformed", b"1")] * len(hostile)
            assert all(b"strict JSON" in d[b"dead_error"] for d in dead)
            await no_pending(raw, stream, group)


async def test_the_contract_is_checked_for_typed_and_catch_all_groups_alike(make_bus: BusFactory, raw: Any) -> None:
    bus = make_bus("auth")
    handled: list[tuple[str, str]] = []
    consumers = typed_and_catch_all(bus, handled)
    auth, workflow = bus.keys.stream("auth"), bus.keys.stream("workflow")
    other_org = json.dumps(user(1, org="o2").model_dump())
    # (stream, fields, reason) in order of writing per stream
    hostile = [
        (auth, envelope(1, data=json.dumps({"user_id": "u1"})), b"invalid_data"),
        (auth, envelope(2, data=other_org), b"org_mismatch"),  # envelope o1, data o2
        (auth, envelope(3, source="workflow"), b"wrong_source"),
        (auth, envelope(4, type="user.teleported"), b"unknown_type"),
        # an auth event written to the workflow stream (the "Your role is now admin")
        (workflow, envelope(5, source="workflow"), b"wrong_stream"),
        (workflow, envelope(6), b"wrong_stream"),
    ]
    async with running(*(c.run for c in consumers)):
        for stream, fields, _ in hostile:
            await raw.xadd(stream, fields)
        await raw.xadd(auth, envelope(7, org_id=None))  # no envelope org: takes the data's
        await wait_until(lambda: len(handled) == 2, timeout=20, message="the good event handled by both groups")
        for group in ("notification", "webhook"):
            dead = await dead_letters(raw, bus, group, len(hostile))
            by_id = {d[b"id"].decode(): d[b"dead_reason"] for d in dead}
            assert by_id == {f[b"id"] if b"id" in f else f["id"]: r for _, f, r in hostile}
            for stream in (auth, workflow):
                await no_pending(raw, stream, group)
    assert sorted(handled) == [("notification", GOOD_ID.format(7)), ("webhook", GOOD_ID.format(7))]


async def test_catch_all_handlers_get_validated_data_with_the_org_of_the_data(make_bus: BusFactory, raw: Any) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("webhook")
    seen: list[Event] = []

    @consumer.on("*")
    async def handle(event: Event) -> None:
        seen.append(event)

    async with running(consumer.run):
        await raw.xadd(bus.keys.stream("auth"), envelope(1, org_id=None))
        await wait_until(lambda: len(seen) == 1, timeout=20, message="event handled")
    assert seen[0].org_id == "o1"
    assert seen[0].data == user(1).model_dump(mode="json")


async def test_publishing_refuses_an_org_that_differs_from_the_data(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    with pytest.raises(ValueError, match=r"differs from data\.org_id"):
        bus.event("user.registered", user(1, org="o2"), org_id="o1")
    assert bus.event("user.registered", user(1, org="o2")).org_id == "o2"
    with pytest.raises(ValueError, match="surrogates not allowed"):  # pydantic refuses to write it
        await bus.publish("user.registered", user(1).model_copy(update={"name": "\ud800"}))
    # dict data of a type outside the catalogue is written as strict JSON too
    with pytest.raises(ValueError, match="not valid Unicode"):
        await bus.publish("app.custom", {"x": "\ud800"})
    with pytest.raises(ValueError, match="not JSON compliant"):
        await bus.publish("app.custom", {"x": float("nan")})


async def test_foreign_entries_held_by_a_dead_consumer_are_reclaimed_and_dead_lettered(
    make_bus: BusFactory, raw: Any
) -> None:
    bus = make_bus("auth")
    stream = bus.keys.stream("auth")
    await raw.xgroup_create(stream, "notification", id="0", mkstream=True)
    await raw.xadd(stream, envelope(1, data=b"\xff"))
    await raw.xadd(stream, envelope(2, data="[" * 60_000 + "]" * 60_000))
    await raw.xadd(stream, envelope(3))
    # a consumer that read them and died: they sit in its pending list
    taken = await raw.xreadgroup("notification", "dead-consumer", {stream: ">"}, count=10)
    assert len(taken[0][1]) == 3
    consumer = bus.consumer("notification", handler_timeout=0.3, claim_idle=0.5)
    handled: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        handled.append(event.id)

    async with running(consumer.run) as stop:
        await wait_until(lambda: handled == [GOOD_ID.format(3)], timeout=20, message="the dead consumer's event")
        dead = await dead_letters(raw, bus, "notification", 2)
        assert [d[b"dead_reason"] for d in dead] == [b"malformed", b"malformed"]
        await no_pending(raw, stream, "notification")
        await raw.xadd(stream, envelope(4))
        await wait_until(lambda: len(handled) == 2, timeout=20, message="the next good event")
        assert not stop.is_set()


async def test_foreign_group_and_consumer_names_do_not_stop_the_consumer_or_the_publisher(
    make_bus: BusFactory, raw: Any
) -> None:
    bus = make_bus("auth", stream_maxlen=5)
    bus.publisher.trim_interval = 0.0
    stream = bus.keys.stream("auth")
    await raw.xgroup_create(stream, b"gr\xffup", id="0", mkstream=True)
    await raw.xgroup_create(stream, "notification", id="0")
    await raw.xgroup_createconsumer(stream, "notification", b"c\xfe")
    consumer = bus.consumer("notification", claim_interval=0.05, stats_interval=0.0)
    handled: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        handled.append(event.id)

    async with running(consumer.run):
        for i in range(10):  # over stream_maxlen: the publisher reads XINFO GROUPS to trim safely
            await bus.publish("user.registered", user(i), subject=f"u{i}")
        await wait_until(lambda: len(handled) == 10, timeout=20, message="10 events handled")

        async def gauges_updated() -> bool:
            return bool(consumer.metrics.pending.labels(stream, "notification")._value.get() == 0)

        await wait_until(gauges_updated, timeout=20, message="gauges updated (XINFO read)")
        stats = {s.name: s for s in await bus.operations.streams("notification")}
        names = {g.name for g in stats[stream].groups}
        assert names == {"gr\\xffup", "notification"}
        consumers = {c.name for g in stats[stream].groups for c in g.consumer_list}
        assert "c\\xfe" in consumers


async def test_handlers_raising_baseexception_like_errors_are_retried_then_dead_lettered(
    make_bus: BusFactory, raw: Any
) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("notification", max_deliveries=2, backoff_base=0.01, backoff_max=0.05)
    calls: Counter[str] = Counter()
    faults: dict[str, BaseException] = {
        "u1": RecursionError("maximum recursion depth exceeded"),
        "u2": SystemExit(3),
        "u3": asyncio.CancelledError("raised by the handler itself"),
    }

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        calls[event.subject or ""] += 1
        fault = faults.get(event.subject or "")
        if fault is not None:
            raise fault

    async with running(consumer.run) as stop:
        for i in range(1, 5):
            await bus.publish("user.registered", user(i), subject=f"u{i}")
        await wait_until(lambda: calls["u4"] == 1, timeout=20, message="the good event handled")
        dead = await dead_letters(raw, bus, "notification", 3)
        assert [(d[b"dead_reason"], d[b"dead_deliveries"]) for d in dead] == [(b"handler_failed", b"2")] * 3
        assert [d[b"dead_error"].split(b":")[0] for d in dead] == [b"RecursionError", b"SystemExit", b"CancelledError"]
        assert not stop.is_set()
    assert (calls["u1"], calls["u2"], calls["u3"]) == (2, 2, 2)


async def test_a_foreign_value_in_an_idempotency_key_cannot_hold_an_event_back(make_bus: BusFactory, raw: Any) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("notification")
    handled: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        handled.append(event.id)

    events = [bus.event("user.registered", user(i), subject=f"u{i}") for i in range(3)]
    await raw.set(bus.keys.seen("notification", events[0].id), b"\xff\xfe")  # no expiry, not ours
    await raw.set(bus.keys.seen("notification", events[1].id), b"lease:1:forever")  # a lease without expiry
    await raw.hset(bus.keys.seen("notification", events[2].id), "x", "y")  # wrong type
    async with running(consumer.run):
        await bus.publish_events(events)
        await wait_until(lambda: len(handled) == 3, timeout=20, message="all three handled")
    assert consumer.idem is not None
    assert [await consumer.idem.is_done(e.id) for e in events] == [True, True, True]
    await raw.set(bus.keys.seen("notification", "x1"), b"\xff")
    assert await consumer.idem.is_done("x1") is False


async def test_a_deleted_stream_and_group_are_recreated_and_consuming_goes_on(make_bus: BusFactory, raw: Any) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("notification", claim_interval=0.05)
    handled: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        handled.append(event.id)

    stream = bus.keys.stream("auth")
    async with running(consumer.run) as stop:
        await bus.publish("user.registered", user(1), subject="u1")
        await wait_until(lambda: len(handled) == 1, timeout=20, message="first event")
        await raw.delete(stream)  # NOGROUP for the next read and reclaim

        async def regrouped() -> bool:
            groups = await raw.xinfo_groups(stream) if await raw.exists(stream) else []
            return any(g["name"] == b"notification" for g in groups)

        await wait_until(regrouped, timeout=20, message="group re-created")
        await bus.publish("user.registered", user(2), subject="u2")
        await wait_until(lambda: len(handled) == 2, timeout=20, message="event after re-creation")
        assert not stop.is_set()


async def test_operations_list_and_replay_dead_letters_that_are_not_utf8_or_huge(
    make_bus: BusFactory, raw: Any
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from novapulse_runtime.http import create_app
    from tests.bus.conftest import OPS_HEADERS

    bus = make_bus("auth")
    rt = bus.rt
    dead = bus.keys.dead("auth")
    base = {b"dead_reason": b"malformed", b"dead_group": b"auth", b"dead_entry_id": b"1-1"}
    foreign = await raw.xadd(dead, {b"id": b"e1", b"data": b"\xff", b"n\xfeme": b"v"} | base)
    huge = await raw.xadd(dead, {b"id": b"e2", b"data": b"x" * 200_000, b"dead_deliveries": b"abc"} | base)
    many = await raw.xadd(dead, {f"f{i}".encode(): b"v" for i in range(100)} | base)
    await raw.xgroup_create(bus.stream(), b"gr\xffup", id="0", mkstream=True)
    app = create_app(
        settings=rt.settings, metrics=rt.metrics, health=rt.health, tracer=rt.tracer, routes=bus.routes("/api/v1/auth")
    )
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/v1/auth/events/dead-letters", headers=OPS_HEADERS)
        assert resp.status == 200
        items = {d["entry_id"]: d for d in (await resp.json())["items"]}
        assert items[foreign.decode()]["fields"] == {"id": "e1", "data": "\\xff", "n\\xfeme": "v"}
        assert items[foreign.decode()]["truncated"] is False
        assert len(items[huge.decode()]["fields"]["data"]) == 8192
        assert (items[huge.decode()]["truncated"], items[huge.decode()]["deliveries"]) == (True, 0)
        assert (len(items[many.decode()]["fields"]), items[many.decode()]["truncated"]) == (64, True)

        too_big = "99999999999999999999-0"  # 20 digits, over 64 bits: Redis would refuse it
        resp = await client.get("/api/v1/auth/events/dead-letters", params={"after": too_big}, headers=OPS_HEADERS)
        assert resp.status == 422  # outside the documented pattern (at most 19 digits a side)
        assert [e["field"] for e in (await resp.json())["errors"]] == ["after"]
        resp = await client.post(f"/api/v1/auth/events/dead-letters/{too_big}/replay", headers=OPS_HEADERS)
        assert resp.status == 404

        resp = await client.get("/api/v1/auth/events/streams", headers=OPS_HEADERS)
        assert resp.status == 200
        own = next(s for s in (await resp.json())["streams"] if s["name"] == bus.stream())
        assert [g["name"] for g in own["groups"]] == ["gr\\xffup"]

        resp = await client.post(f"/api/v1/auth/events/dead-letters/{foreign.decode()}/replay", headers=OPS_HEADERS)
        assert resp.status == 200
        [(_, replayed)] = await raw.xrange(bus.keys.replay("auth"))
        assert replayed == {b"id": b"e1", b"data": b"\xff", b"n\xfeme": b"v"}  # byte for byte
        resp = await client.post("/api/v1/auth/events/dead-letters/replay", headers=OPS_HEADERS)
        assert (await resp.json())["replayed"] == 2
    assert await raw.xlen(dead) == 0


async def test_a_page_of_dead_letters_stays_within_its_size_budget(make_bus: BusFactory, raw: Any) -> None:
    from novapulse_runtime.bus.operations import PAGE_BUDGET_CHARS

    bus = make_bus("auth")
    dead = bus.keys.dead("auth")
    big = {f"f{i:02d}".encode(): b"y" * 10_000 for i in range(64)}  # shown as 64 x 8192 characters
    for _ in range(12):
        await raw.xadd(dead, big | {b"dead_reason": b"malformed"})
    page = await bus.operations.dead_letters("auth", limit=50)
    shown = sum(len(v) for d in page.items for v in d.fields.values())
    assert 0 < len(page.items) < 12
    assert shown <= PAGE_BUDGET_CHARS + 64 * 8192 * 2
    assert page.next_after == page.items[-1].entry_id
    rest = await bus.operations.dead_letters("auth", limit=50, after=page.next_after)
    assert len(page.items) + len(rest.items) <= 12
    with pytest.raises(ValueError, match="not a stream entry id"):
        await bus.operations.dead_letters("auth", after="1-99999999999999999999")


async def test_the_relay_quarantines_records_it_cannot_publish_and_goes_on(make_bus: BusFactory, raw: Any) -> None:
    from novapulse_runtime.bus.constants import OUTBOX_COLLECTION, OUTBOX_DEAD_COLLECTION

    bus = make_bus("auth")
    outbox = bus.outbox()
    good = bus.event("user.registered", user(1), subject="u1")
    fields = outbox._fields(good)
    collection = bus.rt.db[OUTBOX_COLLECTION]
    bad: list[dict[str, Any]] = [
        {"_id": "0000-a", "fields": {"id": "x", "data": 1}},  # not a map of strings
        {"_id": "0000-b", "fields": "nope"},
        {"_id": "0000-c", "fields": fields | {"source": "workflow"}},  # not this service's event
        {"_id": "0000-d", "fields": fields, "stream": bus.keys.stream("webhook")},  # another service's stream
        {"_id": "0000-e", "fields": {k: v for k, v in fields.items() if k != "time"}},
    ]
    await collection.insert_many(bad)
    await collection.insert_one(outbox._record(good, fields, None))
    async with running(outbox.relay):

        async def relayed() -> bool:
            return await collection.count_documents({}) == 0

        await wait_until(relayed, timeout=20, message="outbox drained")
    entries = await raw.xrange(bus.stream())
    assert [f[b"id"].decode() for _, f in entries] == [good.id]
    assert await raw.exists(bus.keys.stream("webhook")) == 0
    quarantined = {d["_id"]: d["error"] async for d in bus.rt.db[OUTBOX_DEAD_COLLECTION].find({})}
    assert set(quarantined) == {d["_id"] for d in bad}
    assert quarantined["0000-c"] == "source is 'workflow', not auth"
    assert quarantined["0000-e"] == "malformed: missing field(s): time"


async def test_garbage_trace_headers_do_not_stop_handling(make_bus: BusFactory, raw: Any) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("notification")
    handled: list[str] = []

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        handled.append(event.id)

    stream = bus.keys.stream("auth")
    headers = [
        {"traceparent": "00-" + "z" * 32 + "-" + "0" * 16 + "-01"},
        {"traceparent": "ff-ffffffffffffffffffffffffffffffff-ffffffffffffffff-ff", "tracestate": "=,=,\x01"},
        {"traceparent": "x" * 100_000, "tracestate": "k=" + "v" * 100_000},
        {"traceparent": "00-00000000000000000000000000000000-0000000000000000-00"},
    ]
    async with running(consumer.run) as stop:
        for n, extra in enumerate(headers):
            await raw.xadd(stream, envelope(n, **extra))
        await wait_until(lambda: len(handled) == len(headers), timeout=20, message="every event handled")
        assert not stop.is_set()
    assert int(await raw.xlen(bus.keys.dead("notification"))) == 0


async def test_the_streams_listing_survives_a_key_that_is_not_a_stream(make_bus: BusFactory, raw: Any) -> None:
    bus = make_bus("notification")
    await raw.set(bus.keys.stream("report"), b"\xff not a stream")  # a catalogue stream scanned for groups
    await raw.set(bus.keys.dead("notification"), b"x")  # one of the service's own listed streams
    stats = {s.name: s for s in await bus.operations.streams()}
    own = stats[bus.keys.dead("notification")]
    assert (own.exists, own.length, own.groups) == (True, 0, [])
    assert bus.keys.stream("report") not in stats


async def test_a_key_that_is_not_a_stream_does_not_stop_reading_the_others(make_bus: BusFactory, raw: Any) -> None:
    bus = make_bus("auth")
    consumer = bus.consumer("notification")
    handled: list[str] = []

    @consumer.on("user.registered")
    async def on_registered(event: Event) -> None:
        handled.append(event.subject or "")

    @consumer.on("notification.requested")  # reads the workflow stream too
    async def on_requested(event: Event) -> None:
        handled.append("requested")

    workflow = bus.keys.stream("workflow")
    await raw.set(workflow, b"not a stream")  # before start: XGROUP CREATE answers WRONGTYPE
    async with running(consumer.run) as stop:
        await bus.publish("user.registered", user(1), subject="u1")
        await wait_until(lambda: handled == ["u1"], timeout=20, message="auth event handled")
        assert workflow not in consumer.reading
    consumer = bus.consumer("notification")
    consumer.add_handler("user.registered", on_registered)
    consumer.add_handler("notification.requested", on_requested)
    await raw.delete(workflow)
    async with running(consumer.run) as stop:
        await raw.set(workflow, b"not a stream")  # while running: XREADGROUP answers WRONGTYPE
        await bus.publish("user.registered", user(2), subject="u2")
        await wait_until(lambda: handled == ["u1", "u2"], timeout=20, message="auth event after WRONGTYPE")
        assert not stop.is_set()
