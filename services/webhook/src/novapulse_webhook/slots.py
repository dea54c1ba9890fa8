"""An endpoint's ``concurrency`` across every worker process: a lease-based counting semaphore in Redis.

One sorted set per endpoint, ``<namespace>:webhook:endpoint-slots:<endpoint_id>``: members are the claim
tokens of attempts in flight, scores the end of each slot's lease in Redis server milliseconds. Taking a slot
drops expired members and adds ours if fewer than ``limit`` remain (one Lua script, atomic); the holder
renews its slot with its message lease and removes it when the attempt ends. A killed worker's slots run out
with its leases (``WEBHOOK_LEASE``), so they never stay taken.

If Redis cannot be reached, a slot is granted (fail open, like the runtime's rate limiter): each worker's own
lane still caps the endpoint at ``concurrency`` in that process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from novapulse_runtime.redisconn import slot_groups

log = logging.getLogger("novapulse.webhook.slots")

_OP_TIMEOUT = 0.5  # seconds for one script call

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], 2 * ttl)
  return 1
end
return 0
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if redis.call('ZSCORE', key, ARGV[i + 1]) then
    redis.call('ZADD', key, now + ttl, ARGV[i + 1])
    redis.call('PEXPIRE', key, 2 * ttl)
  end
end
return 0
"""


class EndpointSlots:
    """``acquire``/``release``/``renew`` of attempt slots; ``ttl`` is the slot lease in seconds."""

    def __init__(self, redis: Redis, namespace: str, ttl: float) -> None:
        self.redis = redis
        self.prefix = f"{namespace}:webhook:endpoint-slots:"
        self.ttl_ms = int(ttl * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)

    def key(self, endpoint_id: str) -> str:
        """The Redis key of the endpoint's slots."""
        return self.prefix + endpoint_id

    async def try_acquire(self, endpoint_id: str, token: str, limit: int) -> bool:
        """Take one of the endpoint's ``limit`` slots for ``token``; True when taken (or Redis is down)."""
        try:
            async with asyncio.timeout(_OP_TIMEOUT):
                return bool(await self._acquire(keys=[self.key(endpoint_id)], args=[token, limit, self.ttl_ms]))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("endpoint slots unavailable; failing open", extra={"error": repr(exc)})
            return True

    async def release(self, endpoint_id: str, token: str) -> None:
        """Give back ``token``'s slot (a failure is logged; the slot then runs out with its lease)."""
        try:
            async with asyncio.timeout(_OP_TIMEOUT):
                await self.redis.zrem(self.key(endpoint_id), token)
        except (RedisError, OSError, TimeoutError) as exc:  # the slot runs out with its lease
            log.warning("cannot release an endpoint slot", extra={"error": repr(exc)})

    async def renew(self, held: Iterable[tuple[str, str]]) -> None:
        """Extend the slots held as ``(endpoint_id, token)`` by another ``ttl``."""
        pairs = list(held)
        if not pairs:
            return
        keyed = [(self.key(e), t) for e, t in pairs]
        # one script on a single server; on a Redis Cluster one per hash slot (each endpoint's key is its own)
        first = {k: part[0] for part in slot_groups(self.redis, dict.fromkeys(k for k, _ in keyed)) for k in part}
        batches: dict[str, list[tuple[str, str]]] = {}  # first key of a slot → its (key, token) pairs
        for key, token in keyed:
            batches.setdefault(first[key], []).append((key, token))
        try:
            async with asyncio.timeout(_OP_TIMEOUT):
                for batch in batches.values():
                    await self._renew(keys=[k for k, _ in batch], args=[self.ttl_ms, *(t for _, t in batch)])
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cannot renew endpoint slots", extra={"error": repr(exc)})
