"""Endpoint slots against a real Redis, takes and releases of one loop turn batched into one script call:
every endpoint's limit stays exact inside a batch (some takes granted, some refused), a key Redis cannot use
fails open for its endpoint only, an unreachable Redis fails open, and a take whose caller was cancelled is
given back."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from novapulse_devkit.servers import free_port
from novapulse_devkit.testing import wait_until
from novapulse_webhook.slots import EndpointSlots

pytestmark = pytest.mark.integration


async def test_a_batch_grants_and_refuses_exactly_per_endpoint(redis_url: str, names: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        slots = EndpointSlots(redis, names, ttl=10)
        assert await slots.try_acquire("busy", "held-elsewhere", 1)  # another worker holds busy's one slot
        asked = [("a", "t1", 2), ("b", "t2", 1), ("a", "t3", 2), ("busy", "t4", 1), ("a", "t5", 2), ("b", "t6", 1)]
        before = slots._takes.batches
        got = await asyncio.gather(*(slots.try_acquire(e, t, n) for e, t, n in asked))
        assert got == [True, True, True, False, False, False]
        assert slots._takes.batches == before + 1  # one script call for the whole turn
        assert set(await redis.zrange(slots.key("a"), 0, -1)) == {"t1", "t3"}
        assert set(await redis.zrange(slots.key("b"), 0, -1)) == {"t2"}
        assert set(await redis.zrange(slots.key("busy"), 0, -1)) == {"held-elsewhere"}
        assert await slots.try_acquire("a", "t1", 2)  # a token already holding a slot keeps it
        gives = slots._gives.batches
        await asyncio.gather(slots.release("a", "t1"), slots.release("b", "t2"), slots.release("busy", "nope"))
        assert slots._gives.batches == gives + 1
        assert set(await redis.zrange(slots.key("a"), 0, -1)) == {"t3"}
        assert await redis.zcard(slots.key("b")) == 0
        assert await asyncio.gather(slots.try_acquire("a", "t5", 2), slots.try_acquire("a", "t7", 2)) == [True, False]
    finally:
        await redis.aclose()


async def test_a_key_redis_cannot_use_fails_open_for_its_endpoint_only(redis_url: str, names: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        slots = EndpointSlots(redis, names, ttl=10)
        await redis.set(slots.key("broken"), "not a sorted set")  # every command on it fails with WRONGTYPE
        assert await slots.try_acquire("full", "x", 1)
        got = await asyncio.gather(
            slots.try_acquire("ok", "t1", 1),
            slots.try_acquire("broken", "t2", 1),
            slots.try_acquire("full", "t3", 1),
            slots.try_acquire("ok", "t4", 1),
        )
        assert got == [True, True, False, False]  # the keys after the broken one are still decided exactly
        assert set(await redis.zrange(slots.key("ok"), 0, -1)) == {"t1"}
        await asyncio.gather(slots.release("broken", "t2"), slots.release("ok", "t1"))  # logged, not raised
        assert await redis.zcard(slots.key("ok")) == 0
    finally:
        await redis.aclose()


async def test_unreachable_redis_fails_open_for_the_whole_batch(names: str) -> None:
    redis = Redis(port=free_port(), socket_connect_timeout=0.2)
    try:
        slots = EndpointSlots(redis, names, ttl=10)
        assert await asyncio.gather(slots.try_acquire("a", "t1", 1), slots.try_acquire("a", "t2", 1)) == [True, True]
        await asyncio.gather(slots.release("a", "t1"), slots.release("a", "t2"))  # logged, not raised
    finally:
        await redis.aclose()


async def test_a_take_whose_caller_was_cancelled_is_given_back(redis_url: str, names: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        slots = EndpointSlots(redis, names, ttl=10)
        waiter = asyncio.create_task(slots.try_acquire("a", "gone", 1))
        other = asyncio.create_task(slots.try_acquire("b", "stays", 1))
        await asyncio.sleep(0)  # both asked: their batch is scheduled
        await asyncio.sleep(0)  # and sent
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await other  # the batch went on for the caller still waiting
        await wait_until(lambda: slots._gives.batches == 1, 5.0, message="the abandoned slot given back")
        await wait_until(lambda: slots._gives._tasks == set(), 5.0)
        assert await redis.zcard(slots.key("a")) == 0
        assert await redis.zrange(slots.key("b"), 0, -1) == ["stays"]
        assert await slots.try_acquire("a", "next", 1)  # the endpoint's only slot is free again
    finally:
        await redis.aclose()
