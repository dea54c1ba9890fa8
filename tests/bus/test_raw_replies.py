"""The consumer's hand-read replies (``streams.exchange``): ``XREADGROUP`` field lists decoded straight from
the server's flat arrays; the batched idempotency claim and the acknowledgement flush sent packed. Malformed
field lists (odd length, not an array, binary junk) must come out as the entry's problem, so the consumer
dead-letters the entry with that reason; a reply without an entry id is a ``RedisError`` (the read is
retried). On the real Redis server: error replies, a lost script cache, a blocking read longer than the
socket timeout, a cancelled read."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import hiredis
import pytest
import redis
from redis.exceptions import InvalidResponse, ResponseError

from novapulse_devkit.testing import wait_until
from novapulse_runtime.bus.idempotency import Claim, Idempotency
from novapulse_runtime.bus.keys import Keys
from novapulse_runtime.bus.metrics import BusMetrics
from novapulse_runtime.bus.settle import HeldEntry, Settler
from novapulse_runtime.bus.streams import _flat_entries, decode_flat, ensure_group, exchange, read_group
from novapulse_runtime.eager import start_task_eagerly
from novapulse_runtime.metrics import Metrics
from novapulse_runtime.redisconn import connect_redis, is_cluster


def test_a_well_formed_field_list_is_decoded_in_order_and_a_repeated_name_keeps_its_last_value() -> None:
    assert decode_flat([b"id", b"1", b"type", b"t.x", b"id", b"2"]) == ({"id": "2", "type": "t.x"}, None)
    assert decode_flat([b"k", "caf\u00e9".encode()]) == ({"k": "caf\u00e9"}, None)
    assert decode_flat(None) == (None, None)  # a deleted entry


def test_an_odd_field_list_is_the_entry_problem() -> None:
    fields, problem = decode_flat([b"id", b"1", b"type"])
    assert fields == {"id": "1"}
    assert problem == "odd number of field names and values (3)"


def test_binary_junk_is_kept_byte_for_byte_and_named() -> None:
    fields, problem = decode_flat([b"id", b"1", b"\xff\xfe", b"\x80junk"])
    assert fields is not None
    assert problem is not None
    assert "field(s) not UTF-8" in problem
    assert "\\xff\\xfe" in problem
    (name,) = [k for k in fields if k != "id"]
    assert name.encode("utf-8", "surrogateescape") == b"\xff\xfe"
    assert fields[name].encode("utf-8", "surrogateescape") == b"\x80junk"


def test_a_field_list_that_is_not_an_array_of_strings_is_the_entry_problem() -> None:
    assert decode_flat(b"id") == ({}, "field list is not an array (bytes)")
    assert decode_flat(7) == ({}, "field list is not an array (int)")
    fields, problem = decode_flat([b"id", 7])
    assert fields == {"id": "7"}
    assert problem == "field(s) not strings"


def test_entries_carry_their_problem_and_a_reply_without_an_entry_id_is_refused() -> None:
    entries = _flat_entries("s", [[b"1-0", [b"a", b"b"]], [b"2-0", [b"a"]], [b"3-0", None]])
    assert entries == [
        ("s", "1-0", {"a": "b"}, None),
        ("s", "2-0", {}, "odd number of field names and values (1)"),
        ("s", "3-0", None, None),
    ]
    assert _flat_entries("s", None) == []
    for bad in (b"junk", [b"1-0"], [[7, [b"a", b"b"]]], [[b"1-0"]]):  # no [id, fields] to settle
        with pytest.raises(InvalidResponse):
            _flat_entries("s", bad)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    redis = connect_redis(redis_url, socket_timeout=0.5)
    yield redis
    await redis.aclose()


@pytest.mark.integration
async def test_read_group_reads_binary_junk_and_raises_the_servers_errors(client: Any, names: str) -> None:
    stream = f"{{{names}}}:raw"
    await ensure_group(client, stream, "g")
    await client.xadd(stream, {b"id": b"e1", b"\xff": b"\xfe\x00"})
    await client.xadd(stream, {"id": "e2", "type": "t.x"})
    entries = await read_group(client, "g", "c", {stream: ">"}, 10, None)
    assert [(e[1].count("-"), e[2] and e[2].get("id"), e[3] is None) for e in entries] == [
        (1, "e1", False),
        (1, "e2", True),
    ]
    assert "not UTF-8" in (entries[0][3] or "")
    assert await read_group(client, "g", "c", {stream: ">"}, 10, None) == []
    with pytest.raises(ResponseError, match="NOGROUP"):
        await read_group(client, "missing", "c", {stream: ">"}, 10, None)
    await client.set(f"{{{names}}}:plain", "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await read_group(client, "g", "c", {f"{{{names}}}:plain": ">"}, 10, None)


@pytest.mark.integration
async def test_a_block_longer_than_the_socket_timeout_and_a_cancelled_read_keep_the_pool_usable(
    client: Any, names: str
) -> None:
    stream = f"{{{names}}}:block"
    await ensure_group(client, stream, "g")
    # BLOCK 800 ms with a 0.5 s socket timeout: bounded by both together, so an empty read returns
    assert await read_group(client, "g", "c", {stream: ">"}, 10, 800) == []
    reader = asyncio.create_task(read_group(client, "g", "c", {stream: ">"}, 10, 5000))
    if is_cluster(client):  # INFO of a cluster client answers per node: give the read a moment to be sent
        await asyncio.sleep(0.1)
    else:  # cancel while the server holds the read blocked, with its reply still to come

        async def blocked() -> bool:
            return int((await client.info("clients"))["blocked_clients"]) >= 1

        await wait_until(blocked, message="the read blocked on the server")
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    # the cancelled read's connection was closed, not handed back with its reply still to come
    await client.xadd(stream, {"id": "e1"})
    assert [e[2] for e in await read_group(client, "g", "c", {stream: ">"}, 10, None)] == [{"id": "e1"}]
    assert await client.ping()


@pytest.mark.integration
async def test_an_exchange_started_eagerly_is_on_the_wire_before_the_event_loop_runs_again(
    client: Any, names: str, redis_url: str
) -> None:
    # the consumer starts its read-ahead eagerly and then runs a whole batch of handlings without waiting:
    # the read must already be with the server by then, not written at the event loop's next turn
    if is_cluster(client):
        pytest.skip("exchange is for one server; a cluster keeps redis-py's commands")
    key = f"{{{names}}}:eager"
    await client.ping()  # a connected connection in the pool (a new one connects first, which waits)
    sync = redis.Redis.from_url(redis_url)
    try:
        request: bytes = hiredis.pack_command(("SET", key, "1"))  # type: ignore[arg-type]  # its stub: 1-tuples
        reply = start_task_eagerly(exchange(client, request, 1))
        # no await until the server has it: polled from another client with a deadline, the event loop held
        deadline = time.monotonic() + 5.0
        while sync.get(key) != b"1":
            assert time.monotonic() < deadline, "the request was not written before the event loop ran again"
            time.sleep(0.001)
        assert await reply == ["OK"]
    finally:
        sync.close()


@pytest.mark.integration
async def test_the_claim_survives_a_lost_script_cache(client: Any, names: str) -> None:
    idem = Idempotency(client, Keys(names), "g", lease=5.0, ttl=60.0)
    assert await idem.claim_many(["a", "b"]) == [Claim.NEW, Claim.NEW]
    if not is_cluster(client):
        await client.script_flush()  # NOSCRIPT for the next EVALSHA: sent again as EVAL
    await client.set(idem.key("c"), "done")
    assert await idem.claim_many(["a", "c", "d"]) == [Claim.BUSY, Claim.DONE, Claim.NEW]


@pytest.mark.integration
async def test_a_flush_writes_every_marker_and_acknowledgement_and_raises_the_first_error(
    client: Any, names: str
) -> None:
    keys = Keys(names)
    idem = Idempotency(client, keys, "g", lease=5.0, ttl=60.0)
    settler = Settler(
        client, "g", idem=idem, metrics=BusMetrics(Metrics("test", "worker")), dead_stream="d", dead_maxlen=100
    )
    good, bad = f"{{{names}}}:good", f"{{{names}}}:bad"
    await ensure_group(client, good, "g")
    await client.xadd(good, {"id": "e1"})
    await client.xadd(good, {"id": "e2"})
    (e1, e2) = [e[1] for e in await read_group(client, "g", "c", {good: ">"}, 10, None)]
    await client.set(bad, "not a stream")
    settler.ack(HeldEntry(bad, "1-0", {}, 1))  # WRONGTYPE for this XACK
    settler.ack(HeldEntry(good, e1, {}, 1), "e1")
    settler.ack(HeldEntry(good, e2, {}, 1), "e2")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await settler.flush()
    # the commands after the failing one were still run, as in a pipeline
    assert await idem.is_done("e1")
    assert await idem.is_done("e2")
    assert (await client.xpending(good, "g"))["pending"] == 0
    await settler.flush()  # nothing queued: nothing sent
