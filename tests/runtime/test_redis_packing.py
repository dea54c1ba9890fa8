"""Commands packed in C (hiredis) by the runtime's Redis client: the same bytes as redis-py's own packer, the
same errors for what cannot be sent."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from novapulse_runtime.redisconn import _CPacking, connect_redis

pytestmark = pytest.mark.unit

CASES: list[tuple[Any, ...]] = [
    ("SET", "key", "value"),
    ("CONFIG GET", "maxmemory"),  # a command name of two words
    (b"SCRIPT LOAD", "return 1"),
    ("XACK", "novapulse:events:auth", "notification", *[f"1733000000000-{i}" for i in range(100)]),
    ("EVALSHA", "a" * 40, 2, "k:{g}:é", b"\xff\xfe raw bytes", "lease:1:ab", 15000),
    ("SET", "k", 1.5),
    ("SET", "k", 0.1),
    ("SET", "k", 1e20),
    ("SET", "k", float("inf")),
    ("SET", "k", -3),
    ("SET", "k", 2**70),
    ("SET", "k", memoryview(b"abc")),
    ("SET", "k", "x" * 10_000),  # beyond redis-py's 6,000-byte chunking
    ("SET", "k", ""),
]


def _joined(chunks: list[Any]) -> bytes:
    return b"".join(bytes(chunk) for chunk in chunks)


def _clients() -> tuple[Any, Any]:
    client = connect_redis("redis://127.0.0.1:1/0", socket_timeout=1.0)
    fast = client.connection_pool.make_connection()
    return fast, Connection()


@pytest.mark.parametrize("args", CASES, ids=range(len(CASES)))
def test_the_same_bytes_as_redis_py(args: tuple[Any, ...]) -> None:
    fast, plain = _clients()
    assert isinstance(fast, Connection)
    assert isinstance(fast, _CPacking)
    assert _joined(fast.pack_command(*args)) == _joined(plain.pack_command(*args))
    commands = [args, ("PING",), args]
    assert _joined(fast.pack_commands(commands)) == _joined(plain.pack_commands(commands))


@pytest.mark.parametrize("bad", [None, True, {"a": 1}, [1]])
def test_what_cannot_be_sent_is_still_a_data_error(bad: object) -> None:
    fast, _ = _clients()
    with pytest.raises(DataError):
        fast.pack_command("SET", "k", bad)


def test_text_that_is_not_utf8_is_refused_as_before() -> None:
    fast, plain = _clients()
    for conn in (fast, plain):
        with pytest.raises(UnicodeEncodeError):
            conn.pack_command("SET", "k", "\udcff")


def test_sentinel_clients_pack_in_c_too() -> None:
    client = connect_redis("redis+sentinel://127.0.0.1:1/primary", socket_timeout=1.0)
    assert issubclass(client.connection_pool.connection_class, _CPacking)
