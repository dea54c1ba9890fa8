"""Endpoint versions against a real Redis: reads asked for in the same turn of the event loop go out as one
round trip and each caller gets its own organisation's token, written before it asked; without Redis the
version is unknown (``None``)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from novapulse_devkit.servers import free_port
from novapulse_webhook.versions import EndpointVersions

pytestmark = pytest.mark.integration


async def test_reads_of_one_loop_turn_each_see_their_organisations_token(redis_url: str, names: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        versions = EndpointVersions(redis, names)
        await versions.bump("o1")
        await versions.bump("o2")
        t1, t2 = await redis.get(versions.key("o1")), await redis.get(versions.key("o2"))
        got = await asyncio.gather(*(versions.current(org) for org in ["o1", "o2", "o3", "o1", "o2"]))
        assert got == [t1.decode(), t2.decode(), "-", t1.decode(), t2.decode()]
        await versions.bump("o1")  # a write that answered before the next read is seen by it
        t1b = (await redis.get(versions.key("o1"))).decode()
        assert t1b != t1.decode()
        assert await asyncio.gather(versions.current("o1"), versions.current("o2")) == [t1b, t2.decode()]
        assert await versions.current("o1") == t1b
    finally:
        await redis.aclose()


async def test_unreachable_redis_makes_the_version_unknown(names: str) -> None:
    redis = Redis(port=free_port(), socket_connect_timeout=0.2)
    try:
        versions = EndpointVersions(redis, names)
        assert await asyncio.gather(versions.current("o1"), versions.current("o2")) == [None, None]
        assert await versions.current("o1") is None
    finally:
        await redis.aclose()
