"""``redis+sentinel://`` URLs: parsed into Sentinels, master name, database and credentials; a bad one stops
the process at start-up naming ``REDIS_URL``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from novapulse_runtime.redisconn import RedisUrlError, connect_redis
from novapulse_runtime.redissentinel import (
    SentinelRedis,
    SentinelTarget,
    is_sentinel_url,
    parse_sentinel_url,
    sentinel_client,
)
from novapulse_runtime.settings import ServiceSettings, describe_error

pytestmark = pytest.mark.unit


def test_full_url_is_parsed() -> None:
    url = "redis+sentinel://app:p%40ss@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/3"
    assert parse_sentinel_url(url) == SentinelTarget(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)),
        master="mymaster",
        db=3,
        username="app",
        password="p@ss",
        ssl=False,
    )


def test_minimal_and_tls_urls() -> None:
    assert parse_sentinel_url("redis+sentinel://h:1/m") == SentinelTarget((("h", 1),), "m")
    target = parse_sentinel_url("rediss+sentinel://:secret@h:1/m/0")
    assert target.ssl
    assert target.password == "secret"
    assert target.username is None
    assert is_sentinel_url("REDIS+SENTINEL://h:1/m")
    assert not is_sentinel_url("redis://h:1/0")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel:///m", "at least one Sentinel"),
        ("redis+sentinel://h:1", "/<master name>"),
        ("redis+sentinel://h:1/", "/<master name>"),
        ("redis+sentinel://h:x/m", "port"),
        ("redis+sentinel://h:70000/m", "port"),
        ("redis+sentinel://h:1/m/zero", "whole number"),
        ("redis+sentinel://h:1/m/0/extra", "path"),
        ("redis+sentinel://h:1/m?db=1", "query"),
        ("redis+sentinel://[::1/m", "address"),
    ],
)
def test_bad_url_is_a_settings_error_naming_redis_url(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("/", ".").replace("<", ".").replace(">", ".")):
        parse_sentinel_url(url)
    with pytest.raises(ValidationError) as caught:
        ServiceSettings(redis_url=url, mongo_url="mongodb://127.0.0.1:1")
    assert describe_error(caught.value).startswith("REDIS_URL: ")


async def test_client_is_built_from_sentinel_without_connecting() -> None:
    client = sentinel_client(
        "rediss+sentinel://u:pw@127.0.0.1:1,127.0.0.1:2/main/2",
        sentinel_password="sentinel-secret",
        decode_responses=True,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
    )
    try:
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "main"
        assert pool.connection_class is SentinelManagedSSLConnection
        kwargs = pool.connection_kwargs
        assert (kwargs["db"], kwargs["username"], kwargs["password"], kwargs["socket_timeout"]) == (2, "u", "pw", 5.0)
        assert client.sentinel_manager is not None
        sentinels = client.sentinel_manager.sentinels
        assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
        assert sentinels[0].connection_pool.connection_kwargs["password"] == "sentinel-secret"
        assert sentinels[0].connection_pool.connection_kwargs["socket_timeout"] == 5.0
    finally:
        await client.aclose()


async def test_connect_redis_follows_a_sentinel_url() -> None:
    """The one client builder (used by the runtime and the tests) understands the Sentinel form too."""
    client = connect_redis("redis+sentinel://127.0.0.1:1/main/4", socket_timeout=3.0, sentinel_password="s")
    try:
        assert isinstance(client, SentinelRedis)
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert (pool.service_name, pool.connection_kwargs["db"], pool.connection_kwargs["socket_timeout"]) == (
            "main",
            4,
            3.0,
        )
        assert pool.connection_kwargs["retry_on_timeout"] is False
        assert client.sentinel_manager is not None
        assert client.sentinel_manager.sentinels[0].connection_pool.connection_kwargs["password"] == "s"
    finally:
        await client.aclose()
    with pytest.raises(RedisUrlError, match=r"^REDIS_URL: "):
        connect_redis("redis+sentinel://127.0.0.1:1/", socket_timeout=3.0)


def test_replica_acks_are_refused_with_a_cluster_url() -> None:
    with pytest.raises(ValidationError) as caught:
        ServiceSettings(redis_url="redis+cluster://h:7000", mongo_url="mongodb://127.0.0.1:1", outbox_replica_acks=1)
    assert "OUTBOX_REPLICA_ACKS" in describe_error(caught.value)
