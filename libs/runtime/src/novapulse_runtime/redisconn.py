"""Building the process's Redis client from ``REDIS_URL``: one server, a Redis Cluster, or a Sentinel-managed
primary.

URL forms (``REDIS_URL``):

- ``redis://[user:password@]host:port[/db]``, ``rediss://...`` (TLS), ``unix:///path/to/socket`` — one server
  (redis-py's ``Redis.from_url``; every query parameter it knows is honoured);
- ``redis+cluster://[user:password@]host:port[,host:port...][/0]`` and ``rediss+cluster://...`` (TLS) — a Redis
  Cluster (``redis.asyncio.cluster.RedisCluster``): the listed nodes are only the seeds, the client learns the
  rest from ``CLUSTER SLOTS``. A cluster has database 0 only, so the path is empty or ``/0``;
- ``redis+sentinel://[user:password@]host:port[,host:port...]/<master>[/<db>]`` and ``rediss+sentinel://...``
  — the primary the Sentinels name, followed across fail-overs (:mod:`novapulse_runtime.redissentinel`).

The single-server and Sentinel clients pack commands in C (hiredis, as redis-py's synchronous client does; see
:func:`use_c_packing`): same bytes, a fraction of the CPU per argument.

All clients get the same timeouts (:data:`SOCKET_CONNECT_TIMEOUT`, the caller's ``socket_timeout``,
:data:`HEALTH_CHECK_INTERVAL`). The cluster client is typed as ``Redis`` for the code that uses it: it answers
every command the runtime sends, with the limits the callers handle through :func:`is_cluster` (a
multi-key command or script must touch one hash slot — see ``docs/events.md``, "Slot layout"; no ``EVALSHA``
or ``PUBLISH`` inside a pipeline: :func:`queue_script`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.crc import key_slot

from .redissentinel import is_sentinel_url, sentinel_client

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
"""URL scheme → TLS on, for the cluster forms of ``REDIS_URL``."""
SOCKET_CONNECT_TIMEOUT = 2.0
"""Seconds to open a connection to a Redis server (each node of a cluster) before ``ConnectionError``."""
HEALTH_CHECK_INTERVAL = 15
"""Seconds a pooled connection may sit idle before it is pinged on its next use."""


class RedisUrlError(ValueError):
    """A ``REDIS_URL`` that cannot be used; the message names ``REDIS_URL`` and what is wrong."""


@dataclass(frozen=True)
class ClusterUrl:
    """A parsed ``redis+cluster://`` / ``rediss+cluster://`` URL: seed nodes ``(host, port)``, credentials, TLS."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool


def parse_cluster_url(url: str) -> ClusterUrl | None:
    """The cluster form of ``url``, or ``None`` when ``url`` is not ``redis+cluster://`` / ``rediss+cluster://``.

    Raises :class:`RedisUrlError` for a cluster URL without nodes, with a node that is not ``host:port``
    (port 1-65535; IPv6 hosts in brackets, ``[::1]:7000``), with a database other than 0, or with a query
    string (cluster options are not taken from the URL)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        return None
    tls = CLUSTER_SCHEMES[scheme.lower()]
    if "?" in rest or "#" in rest:
        raise RedisUrlError("REDIS_URL: a cluster URL takes no query string or fragment")
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise RedisUrlError(f"REDIS_URL: a Redis Cluster has database 0 only, not /{path[:20]}")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # redis://secret@host: the password alone, as redis-py reads it
            username, password = None, unquote(user)
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            parsed = urlsplit(f"//{item}")
            host, port = parsed.hostname, parsed.port
        except ValueError as exc:
            raise RedisUrlError(f"REDIS_URL: cluster node {item[:64]!r} is not host:port ({exc})") from None
        if not host or port is None or not 0 < port <= 65535:
            raise RedisUrlError(f"REDIS_URL: cluster node {item[:64]!r} is not host:port")
        nodes.append((host, port))
    if not nodes:
        raise RedisUrlError("REDIS_URL: a cluster URL names at least one node (redis+cluster://host:port,...)")
    return ClusterUrl(tuple(nodes), username, password, tls)


class _CPacking:
    """Packs commands with hiredis's C packer — what redis-py's synchronous client does — instead of the
    asyncio client's Python one, which cost ~1.7 µs per argument: a consumer's acknowledgement batch and
    idempotency scripts send three keys or ids per event (about an eighth of its CPU per event). The bytes
    are the same (checked in ``tests/runtime/test_redis_packing.py``); arguments hiredis refuses (``None``,
    booleans, other types) and encodings other than strict UTF-8 go through redis-py's packer, so its
    ``DataError`` stays."""

    encoder: Any

    def pack_command(self, *args: Any) -> list[bytes]:
        encoder = self.encoder
        if encoder.encoding == "utf-8" and encoder.encoding_errors == "strict":
            first = args[0]
            if isinstance(first, str):  # a command name with spaces ("CONFIG GET") is sent as words
                args = (*first.encode().split(), *args[1:])
            elif isinstance(first, bytes) and b" " in first:
                args = (*first.split(), *args[1:])
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
        return packed


_c_packing: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def use_c_packing(client: Redis) -> None:
    """Make the connections ``client``'s pool opens pack commands in C (:class:`_CPacking`)."""
    pool = client.connection_pool
    base = pool.connection_class
    if issubclass(base, _CPacking):
        return
    found = _c_packing.get(base)
    if found is None:
        found = _c_packing[base] = type(f"CPacking{base.__name__}", (_CPacking, base), {})
    pool.connection_class = found


def connect_redis(
    url: str, *, socket_timeout: float, decode_responses: bool = True, sentinel_password: str = ""
) -> Redis:
    """The Redis client of ``url`` (see the module docstring for the forms); nothing connects yet.

    Replies are text unless ``decode_responses`` is False (bytes); ``socket_timeout`` (seconds) bounds each
    reply, connections open within :data:`SOCKET_CONNECT_TIMEOUT` and idle ones are checked every
    :data:`HEALTH_CHECK_INTERVAL` seconds; a timeout is not retried. ``sentinel_password`` (empty: none) is the
    Sentinels' own password (``REDIS_SENTINEL_PASSWORD``), used with a Sentinel URL only. Raises
    :class:`RedisUrlError` (naming ``REDIS_URL``) for a URL that cannot be used."""
    common: dict[str, Any] = {
        "decode_responses": decode_responses,
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
        "socket_timeout": socket_timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
    }
    if is_sentinel_url(url):
        try:
            sentinel = sentinel_client(url, sentinel_password=sentinel_password, retry_on_timeout=False, **common)
        except ValueError as exc:
            raise RedisUrlError(f"REDIS_URL: {exc}") from None
        use_c_packing(sentinel)
        return sentinel
    cluster = parse_cluster_url(url)
    if cluster is None:
        try:
            client = Redis.from_url(url, retry_on_timeout=False, **common)
        except ValueError as exc:
            raise RedisUrlError(f"REDIS_URL: {exc}") from None
        use_c_packing(client)
        return client
    cluster_client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes],
        username=cluster.username,
        password=cluster.password,
        ssl=cluster.tls,
        **common,
    )
    return cast(Redis, cluster_client)


def is_cluster(redis: Any) -> bool:
    """True when ``redis`` (a client or a pipeline) talks to a Redis Cluster."""
    return isinstance(redis, RedisCluster | ClusterPipeline)


def slot_groups(redis: Any, keys: Iterable[str]) -> list[list[str]]:
    """``keys`` split so that each part may go into one multi-key command or script: one part (all of them,
    in order) on a single server, one part per hash slot (in order of first appearance) on a cluster."""
    items = list(keys)
    if not items or not is_cluster(redis):
        return [items] if items else []
    groups: dict[int, list[str]] = {}
    for key in items:
        groups.setdefault(key_slot(key.encode()), []).append(key)
    return list(groups.values())


async def queue_script(pipe: Pipeline, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> None:
    """Queue ``script`` on ``pipe`` as an ``EVAL`` of its text (the server caches the compiled script by its
    digest, so only the bytes sent grow; a server that lost its script cache — restart, fail-over,
    ``SCRIPT FLUSH`` — cannot answer ``NOSCRIPT``). Not ``EVALSHA``: a redis-py pipeline holding one sends
    ``SCRIPT EXISTS`` before every execute, one more round trip per flush (a consumer's acknowledgement
    batch: ~0.8 µs of CPU per event, issue 15), and a cluster pipeline refuses it. ``keys`` must share one
    hash slot on a cluster."""
    pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)


async def open_pubsub(redis: Redis, **kwargs: Any) -> PubSub:
    """A pub/sub object of ``redis`` (``kwargs`` as ``Redis.pubsub``). On a cluster: redis-py's
    ``ClusterPubSub``, once the client has learnt the slot map (redis-py 8.1 raises ``KeyError`` when a
    subscription is the first thing an unused cluster client does); it subscribes on the node serving the
    channel's slot, and a cluster's ``PUBLISH`` reaches subscribers on every node. Raises ``RedisError``."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()
    return redis.pubsub(**kwargs)
