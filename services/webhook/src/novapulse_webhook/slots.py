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

from novapulse_runtime.batcher import TurnBatcher
from novapulse_runtime.redisconn import slot_groups

log = logging.getLogger("novapulse.webhook.slots")

_OP_TIMEOUT = 0.5  # seconds for one script call (a batch of takes or releases)
RELEASE_WINDOW = 0.005
"""Seconds slot releases are gathered before one script call gives them all back."""

# KEYS: the endpoints' slot sets; ARGV: the lease in ms, then a token and a limit per key. One answer per key,
# in order: 1 taken, 0 refused, -1 the key could not be used (a Redis error on it: the caller fails open for
# that endpoint only, as a take of its own would). Keys are taken in order, so one endpoint asked for twice
# in a batch is counted exactly.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local token, limit = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  local ok, taken = pcall(function()
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('ZSCORE', key, token) or redis.call('ZCARD', key) < limit then
      redis.call('ZADD', key, now + ttl, token)
      redis.call('PEXPIRE', key, 2 * ttl)
      return 1
    end
    return 0
  end)
  if ok then out[i] = taken else out[i] = -1 end
end
return out
"""

# KEYS: the endpoints' slot sets; ARGV: a token per key. One answer per key: 1 removed, 0 not there, -1 error.
_RELEASE = """
local out = {}
for i, key in ipairs(KEYS) do
  local ok, removed = pcall(redis.call, 'ZREM', key, ARGV[i])
  if ok then out[i] = removed else out[i] = -1 end
end
return out
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
    """``acquire``/``release``/``renew`` of attempt slots; ``ttl`` is the slot lease in seconds.

    The takes (and the releases) asked for in one turn of the event loop go out together: one script call
    for all of them on a single server (one per hash slot on a Redis Cluster), through the runtime's
    :class:`~novapulse_runtime.batcher.TurnBatcher`. Each take is still decided on its own, atomically, in
    the order asked, so every endpoint's limit is exact as with one call per take."""

    def __init__(self, redis: Redis, namespace: str, ttl: float) -> None:
        self.redis = redis
        self.prefix = f"{namespace}:webhook:endpoint-slots:"
        self.ttl_ms = int(ttl * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)
        self._takes: TurnBatcher[tuple[str, str, int], bool] = TurnBatcher(self._take_batch, abandoned=self._give_back)
        # Releases come one by one as answers arrive: gathered over a short window (a slot then stays taken
        # that much longer, which can only make the limit stricter, never looser).
        self._gives: TurnBatcher[tuple[str, str], None] = TurnBatcher(self._release_batch, delay=RELEASE_WINDOW)
        self._orphans: set[asyncio.Future[None]] = set()

    def key(self, endpoint_id: str) -> str:
        """The Redis key of the endpoint's slots."""
        return self.prefix + endpoint_id

    async def try_acquire(self, endpoint_id: str, token: str, limit: int) -> bool:
        """Take one of the endpoint's ``limit`` slots for ``token``; True when taken (or Redis is down). A
        caller cancelled while its take is under way gets nothing: a slot taken for it is given back."""
        return await self._takes.ask((endpoint_id, token, limit))

    async def release(self, endpoint_id: str, token: str) -> None:
        """Give back ``token``'s slot (a failure is logged; the slot then runs out with its lease)."""
        await self._gives.ask((endpoint_id, token))

    async def _take_batch(self, takes: list[tuple[str, str, int]]) -> list[bool]:
        answers = [True] * len(takes)  # fail open: what cannot be asked is granted
        for part in self._parts([e for e, _, _ in takes]):
            try:
                async with asyncio.timeout(_OP_TIMEOUT):
                    args: list[str | int] = [self.ttl_ms]
                    for i in part:
                        args += [takes[i][1], takes[i][2]]
                    got = await self._acquire(keys=[self.key(takes[i][0]) for i in part], args=args)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("endpoint slots unavailable; failing open", extra={"error": repr(exc)})
                continue
            for i, taken in zip(part, got, strict=True):
                if int(taken) < 0:
                    log.warning("endpoint slot key unusable; failing open", extra={"endpoint_id": takes[i][0]})
                answers[i] = int(taken) != 0
        return answers

    async def _release_batch(self, gives: list[tuple[str, str]]) -> list[None]:
        for part in self._parts([e for e, _ in gives]):
            try:
                async with asyncio.timeout(_OP_TIMEOUT):
                    got = await self._release(
                        keys=[self.key(gives[i][0]) for i in part], args=[gives[i][1] for i in part]
                    )
            except (RedisError, OSError, TimeoutError) as exc:  # the slots run out with their leases
                log.warning("cannot release endpoint slots", extra={"error": repr(exc), "count": len(part)})
                continue
            for i, removed in zip(part, got, strict=True):
                if int(removed) < 0:
                    log.warning("cannot release an endpoint slot", extra={"endpoint_id": gives[i][0]})
        return [None] * len(gives)

    def _parts(self, endpoint_ids: list[str]) -> list[list[int]]:
        """Positions of ``endpoint_ids`` grouped for one script call each: all on a single server, one group
        per hash slot on a Redis Cluster (each endpoint's key is its own)."""
        keys = [self.key(e) for e in endpoint_ids]
        if len(keys) == 1:
            return [[0]]
        group_of = {k: n for n, part in enumerate(slot_groups(self.redis, dict.fromkeys(keys))) for k in part}
        parts: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            parts.setdefault(group_of[k], []).append(i)
        return list(parts.values())

    def _give_back(self, take: tuple[str, str, int], taken: bool) -> None:
        """A take whose caller was cancelled: give back the slot it took, so it does not stay held for
        nobody until its lease runs out."""
        if not taken:
            return
        task = asyncio.ensure_future(self.release(take[0], take[1]))
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    async def renew(self, held: Iterable[tuple[str, str]]) -> None:
        """Extend the slots held as ``(endpoint_id, token)`` by another ``ttl``."""
        pairs = list(held)
        if not pairs:
            return
        try:
            async with asyncio.timeout(_OP_TIMEOUT):
                for part in self._parts([e for e, _ in pairs]):  # one script per hash slot on a cluster
                    await self._renew(
                        keys=[self.key(pairs[i][0]) for i in part], args=[self.ttl_ms, *(pairs[i][1] for i in part)]
                    )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cannot renew endpoint slots", extra={"error": repr(exc)})
