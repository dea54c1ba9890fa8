"""The publisher's pipelined XADD (``streams.add_batch``): the request packed by hand must be byte for byte what
redis-py would send, replies must stay in step with their commands through errors, timeouts and cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from novapulse_devkit.testing import wait_until
from novapulse_runtime.bus import EventBus
from novapulse_runtime.bus.streams import add_batch, pack_xadd
from novapulse_runtime.redisconn import connect_redis, is_cluster

BusFactory = Callable[..., EventBus]

ODD_FIELDS = {
    "id": "0194d3c0-0000-7000-8000-000000000001",
    "type": "bench.noop",
    "data": '{"name":"Zoë ✓ 𝄞","empty":""}',
    "ünïcode-név": "日本語",
    "empty": "",
    "crlf": "a\r\nb$3\r\n*1",
}


@pytest.mark.unit
def test_pack_xadd_is_what_redis_py_sends() -> None:
    entries = [ODD_FIELDS, {"a": "1"}, {"big": "x" * 70_000 + "é"}]
    expected = b"".join(
        Connection().pack_commands(
            [("XADD", "ns:events:ä", "*", *(x for kv in e.items() for x in kv)) for e in entries] + [("WAIT", 1, 250)]
        )
    )
    assert pack_xadd("ns:events:ä", entries, ("WAIT", "1", "250")) == expected


@pytest.mark.unit
def test_pack_xadd_refuses_a_lone_surrogate() -> None:
    with pytest.raises(UnicodeEncodeError):
        pack_xadd("s", [{"ok": "1"}, {"data": "bad \udcff"}])


@pytest.mark.integration
async def test_add_batch_round_trips_in_order(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    redis = bus.rt.redis
    stream = bus.stream()
    entries = [dict(ODD_FIELDS, n=str(i)) for i in range(250)]
    ids, acked = await add_batch(redis, stream, entries)
    assert acked is None
    stored = await _entries(redis, stream)
    assert [entry_id for entry_id, _ in stored] == ids
    assert [fields for _, fields in stored] == entries
    assert await add_batch(redis, stream, []) == ([], None)


@pytest.mark.integration
async def test_error_reply_is_raised_after_every_reply_is_read(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    redis = bus.rt.redis
    stream = bus.stream()
    await redis.set(stream, "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await add_batch(redis, stream, [{"a": "1"}, {"a": "2"}])
    # the connection went back to the pool in step: the next commands get their own replies
    await redis.delete(stream)
    ids, _ = await add_batch(redis, stream, [{"a": "3"}])
    assert await redis.get(f"{stream}:absent") is None
    assert [entry_id for entry_id, _ in await _entries(redis, stream)] == ids


@pytest.mark.integration
async def test_lone_surrogate_sends_nothing(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    with pytest.raises(UnicodeEncodeError):
        await add_batch(bus.rt.redis, bus.stream(), [{"a": "1"}, {"a": "\ud800"}])
    assert await bus.rt.redis.exists(bus.stream()) == 0


async def _entries(redis: Any, stream: str) -> list[tuple[str, dict[str, str]]]:
    stored: Any = await redis.xrange(stream)
    return list(stored or [])


async def _waiting_clients(redis: Any) -> int:
    clients: list[dict[str, Any]] = await redis.client_list()
    return sum(1 for c in clients if c.get("cmd") == "wait")


async def _some_waiting(redis: Any) -> bool:
    return await _waiting_clients(redis) > 0


async def _none_waiting(redis: Any) -> bool:
    return await _waiting_clients(redis) == 0


@pytest.mark.integration
async def test_timeout_closes_the_connection(redis_url: str, make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    if is_cluster(bus.rt.redis):
        pytest.skip("WAIT without replicas: single server only")
    redis = connect_redis(redis_url, socket_timeout=0.3)
    try:
        # WAIT 1 0 blocks for ever on a server without replicas: only the batch's timeout ends the read
        with pytest.raises(RedisTimeoutError):
            await add_batch(redis, bus.stream(), [{"a": "1"}], wait=(1, 0))
        ids, acked = await add_batch(redis, bus.stream(), [{"a": "2"}], wait=(0, 0))
        assert acked == 0
        assert [entry_id for entry_id, _ in await _entries(redis, bus.stream())][1:] == ids
    finally:
        await redis.aclose()


@pytest.mark.integration
async def test_cancelled_batch_leaves_no_reply_behind(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    redis = bus.rt.redis
    if is_cluster(redis):
        pytest.skip("WAIT without replicas: single server only")
    stream = bus.stream()
    task = asyncio.create_task(add_batch(redis, stream, [{"a": "1"}], wait=(1, 0)))
    await wait_until(lambda: _some_waiting(redis), timeout=10, message="the batch's WAIT is blocked")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # a pooled connection still owing the WAIT reply would hand it to the next command
    for n in range(5):
        ids, _ = await add_batch(redis, stream, [{"b": str(n)}])
        assert ids[0] == (await _entries(redis, stream))[-1][0]
    await wait_until(lambda: _none_waiting(redis), timeout=10, message="the blocked client is gone")
