"""Distributed rate limiting in Redis: GCRA in one Lua script (one round trip, atomic across processes).

Limits are declared where routes are declared (``RateLimit(...)`` on a route). When Redis fails the check
lets the request through (fail open), counts it in ``novapulse_rate_limit_fail_open_total`` and logs at most
once per interval.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .constants import RATE_LIMIT_KEY_PREFIX
from .logs import Throttled
from .metrics import Metrics
from .settings import Network
from .tokens import principal

log = logging.getLogger(__name__)

# KEYS[1] = bucket key; ARGV = emission interval (ms), burst tolerance (ms), cost.
# Uses the server clock so every process agrees on "now".
_GCRA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, math.ceil(new_tat - now)))
local remaining = math.floor((tolerance - (new_tat - now)) / interval)
return {1, remaining, 0, new_tat - now}
"""


KeyFunc = Callable[[web.Request, Any], "str | Awaitable[str | None] | None"]


@dataclass(frozen=True)
class RateLimit:
    """``limit`` requests per ``window`` seconds, bucketed by what ``key`` returns for a request.

    ``key`` receives the request and the parsed body (or ``None``) and returns a string; returning
    ``None`` skips this limit for that request. ``key=None`` buckets by the client address (trusted proxies
    honoured; IPv6 grouped by ``RATE_LIMIT_IPV6_PREFIX``, see :func:`client_key`); :func:`by_user` and
    :func:`by_org` bucket authenticated routes by the caller.
    """

    name: str
    limit: int
    window: float
    key: KeyFunc | None = None

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window <= 0:
            raise ValueError("rate limit needs limit >= 1 and window > 0")

    @property
    def policy(self) -> str:
        return f"{self.limit};w={math.ceil(self.window)}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    reset_after: float

    def headers(self, policy: str) -> dict[str, str]:
        h = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.remaining)),
            "RateLimit-Reset": str(math.ceil(self.reset_after)),
            "RateLimit-Policy": policy,
        }
        if not self.allowed:
            h["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return h


def by_user(request: web.Request, _body: Any) -> str:
    """Rate-limit key: the authenticated caller (routes declared with ``auth=True``)."""
    who = principal(request)
    return f"{who.org_id}:{who.user_id}"


def by_org(request: web.Request, _body: Any) -> str:
    """Rate-limit key: the caller's organisation (routes declared with ``auth=True``)."""
    return principal(request).org_id


def client_ip(request: web.Request, trusted: Sequence[Network]) -> str:
    """The caller's address: ``X-Forwarded-For`` is honoured only when the peer is a trusted proxy, and
    then read right to left, skipping further trusted hops."""
    peer = request.remote or ""
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    forwarded = request.headers.getall("X-Forwarded-For", [])
    hops = [h.strip() for line in forwarded for h in line.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # garbage in the header: trust nothing past it
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def client_network(address: str, ipv6_prefix: int = 64) -> str:
    """The identity a per-client limit is keyed on: an IPv4 address as it is, an IPv6 address as its
    ``/ipv6_prefix`` network (one subscriber usually holds a whole /64, so keying on the full address would
    give them 2**64 buckets). IPv4-mapped IPv6 (``::ffff:203.0.113.5``) counts as the IPv4 address. A value
    that is not an address (say, a Unix socket peer) is returned unchanged."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/{ipv6_prefix}", strict=False))
    return str(ip)


def client_key(request: web.Request, trusted: Sequence[Network], ipv6_prefix: int = 64) -> str:
    """:func:`client_network` of :func:`client_ip`: the bucket of every limit keyed by client address."""
    return client_network(client_ip(request, trusted), ipv6_prefix)


def _is_trusted(addr: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener reports an IPv4 proxy as ::ffff:a.b.c.d
    return any(ip.version == net.version and ip in net for net in trusted)


class RateLimiter:
    """Checks :class:`RateLimit` declarations against Redis."""

    def __init__(
        self,
        redis: Redis,
        metrics: Metrics,
        service: str,
        *,
        fail_open_log_interval: float = 60.0,
        op_timeout: float = 0.25,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_GCRA)
        self._metrics = metrics
        self._prefix = f"{RATE_LIMIT_KEY_PREFIX}{service}:"
        self._log_gate = Throttled(fail_open_log_interval)
        self._op_timeout = op_timeout

    async def hit(self, limit: RateLimit, bucket: str, cost: int = 1) -> Decision:
        interval_ms = limit.window * 1000.0 / limit.limit
        tolerance_ms = limit.window * 1000.0
        try:
            async with asyncio.timeout(self._op_timeout):
                raw = await self._script(
                    keys=[f"{self._prefix}{limit.name}:{bucket}"], args=[interval_ms, tolerance_ms, cost]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self._metrics.rate_limit_fail_open.labels(limit.name).inc()
            if self._log_gate.ready():
                log.warning(
                    "rate limiter failing open: Redis unavailable", extra={"limit": limit.name, "error": repr(exc)}
                )
            return Decision(True, limit.limit, limit.limit, 0.0, 0.0)
        allowed, remaining, retry_ms, reset_ms = (float(x) for x in raw)
        decision = Decision(bool(allowed), limit.limit, int(remaining), retry_ms / 1000.0, reset_ms / 1000.0)
        if not decision.allowed:
            self._metrics.rate_limited.labels(limit.name).inc()
        return decision
