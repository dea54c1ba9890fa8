"""A Redis client that follows a Sentinel-managed primary: ``REDIS_URL=redis+sentinel://...``.

URL form (``rediss+sentinel://`` for TLS to the Sentinels and the data nodes alike)::

    redis+sentinel://[user:password@]host:port[,host:port...]/<master name>[/<db>]

- ``host:port`` pairs are the Sentinels (port defaults to 26379; IPv6 as ``[::1]:26379``);
- ``user:password`` (percent-encoded) authenticate to the *data* nodes (primary and replicas), as in a plain
  ``redis://`` URL;
- ``<master name>`` is the name the Sentinels monitor (``sentinel monitor <name> ...``);
- ``<db>`` is the database number (default 0).

Sentinels with their own password (``requirepass`` in the Sentinel config) take it from the companion setting
``REDIS_SENTINEL_PASSWORD`` (:class:`~novapulse_runtime.settings.ServiceSettings.redis_sentinel_password`).

The client asks the Sentinels for the primary's address whenever it opens a connection, so after a fail-over
every new connection (commands, pipelines, pub/sub, blocking reads) goes to the promoted replica; a connection
still open to a demoted primary answers ``READONLY``, which redis-py turns into a ``ConnectionError`` and a
reconnect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL: the Sentinels, the monitored master's name and how to talk to it."""

    sentinels: tuple[tuple[str, int], ...]
    """``(host, port)`` of each Sentinel, in URL order."""
    master: str
    """The master name the Sentinels monitor."""
    db: int = 0
    username: str | None = None
    password: str | None = None
    """Credentials of the data nodes (not of the Sentinels)."""
    ssl: bool = False
    """TLS to Sentinels and data nodes (``rediss+sentinel://``)."""


def is_sentinel_url(url: str) -> bool:
    """True for a ``redis+sentinel://`` or ``rediss+sentinel://`` URL."""
    return url.split("://", 1)[0].lower() in SCHEMES


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [v6]:port
        host, sep, rest = item[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad Sentinel address {item!r}")
        port_text = rest[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError(f"bad Sentinel address {item!r}: no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"bad Sentinel address {item!r}: port must be 1-65535")
    return host, int(port_text)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse a ``redis+sentinel://`` URL (form in the module docstring).

    :raises ValueError: another scheme, no Sentinel address, a bad ``host:port``, no master name, a database
        that is not a whole number, a query string or fragment (the message says which).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError("a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://")
    if "?" in rest or "#" in rest:
        raise ValueError("a Sentinel URL takes no query string or fragment")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(item.strip()) for item in netloc.split(",") if item.strip())
    if not sentinels:
        raise ValueError("a Sentinel URL names at least one Sentinel host:port")
    parts = path.split("/")
    if not parts or not parts[0]:
        raise ValueError("a Sentinel URL ends with /<master name>[/<db>]")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1]):
        raise ValueError("a Sentinel URL's path is /<master name>[/<db>]")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ValueError(f"database must be a whole number, got {parts[1]!r}")
        db = int(parts[1])
    return SentinelTarget(
        sentinels=sentinels,
        master=unquote(parts[0]),
        db=db,
        username=username,
        password=password,
        ssl=scheme.lower() == "rediss+sentinel",
    )


class SentinelRedis(Redis):
    """The primary's client (``Sentinel.master_for``); closing it also closes its connections to the
    Sentinels."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.sentinel_manager is not None:
                await self.sentinel_manager.aclose()


def sentinel_client(url: str, *, sentinel_password: str = "", **options: Any) -> SentinelRedis:
    """A client of the primary named by ``url`` (see :func:`parse_sentinel_url`), built as
    ``Sentinel(...).master_for(master)``. ``options`` are the connection options of a plain client
    (``decode_responses``, ``socket_timeout`` in seconds...); the Sentinels get the same ``socket_*``
    timeouts and ``sentinel_password`` (empty: none). Nothing connects until the first command.

    :raises ValueError: a bad URL (as :func:`parse_sentinel_url`).
    """
    target = parse_sentinel_url(url)
    sentinel_options: dict[str, Any] = {k: v for k, v in options.items() if k.startswith("socket_")}
    if sentinel_password:
        sentinel_options["password"] = sentinel_password
    if target.ssl:
        sentinel_options["ssl"] = True
    node_options = dict(options, db=target.db)
    if target.username:
        node_options["username"] = target.username
    if target.password is not None:
        node_options["password"] = target.password
    if target.ssl:
        node_options["ssl"] = True  # SentinelConnectionPool: SentinelManagedSSLConnection
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options, **node_options)  # type: ignore[no-untyped-call]
    client: SentinelRedis = sentinel.master_for(target.master, redis_class=SentinelRedis)
    client.sentinel_manager = sentinel
    return client
