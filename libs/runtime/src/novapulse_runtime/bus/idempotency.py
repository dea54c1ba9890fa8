"""Per-group deduplication of event ids in Redis.

Protocol, per ``(group, event id)`` key ``<ns>:seen:{<group>}:<event id>`` (the hash tag keeps a group's keys
in one Redis Cluster slot, so each script below touches one slot):

1. before the handler runs: ``SET key <lease token> NX PX <lease>`` (one Lua call per batch read); if the
   key exists and is ``done`` the delivery is a duplicate (acknowledged, handler not called); if it holds
   another lease, a copy of the same event is being handled elsewhere and this delivery waits for it;
2. after the handler succeeded: ``SET key done PX <ttl>`` (one Lua call per acknowledgement batch, in the same
   pipeline as, and before, the ``XACK``);
   a key holding anything else (a foreign write, another type, a lease without expiry) is taken over;
   while the handler runs (and while the entry waits for a retry) the consumer extends the lease every
   ``claim_idle / 3`` with a compare-and-extend (``PEXPIRE`` only if the key still holds this process's
   token; one Lua call per renewal pass for every lease it holds), so a lease outlives a long handler but
   a dead holder's lease runs out within ``claim_idle``;
3. after the handler failed: ``DEL key`` if this process still holds the lease (compare-and-delete), so the
   retry can take it without ever freeing a lease another consumer took after ours expired.

Guarantee: within ``ttl`` a handler never runs for an event id its group already handled successfully, and
never runs twice at the same time for one event id (as long as its holder renews the lease, i.e. its event
loop is not stalled for a whole ``claim_idle``, the consumer's reclaim idle time). A process that dies after the
handler's effect but before step 2 leaves the lease to expire; the event is then handled again
(at-least-once), so effects must still tolerate a repeat in that narrow window, e.g. with a unique index on
the event id.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError

from ..redisconn import is_cluster, queue_script
from .keys import Keys
from .streams import exchange, raw

DONE = "done"

# Per key: 1 = lease taken (run), 2 = already done (duplicate), 0 = leased by another delivery (wait).
# A value that is neither ``done`` nor a lease, or a lease without expiry, was not written by this protocol
# (a foreign write, a wrong type): it is replaced by our lease, so it can never hold an event back for ever.
_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = 1
  else
    local kind = redis.call('TYPE', key)['ok']
    local value = kind == 'string' and redis.call('GET', key) or ''
    if value == 'done' then
      out[i] = 2
    elseif string.sub(value, 1, 6) == 'lease:' and redis.call('PTTL', key) > 0 then
      out[i] = 0
    else
      redis.call('DEL', key)
      redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
      out[i] = 1
    end
  end
end
return out
"""
_MARK_DONE = """
for _, key in ipairs(KEYS) do
  redis.call('SET', key, 'done', 'PX', ARGV[1])
end
return #KEYS
"""

# Extend each lease that is still ours (compare-and-extend); returns how many were extended.
_EXTEND = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key)['ok'] == 'string' and redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    n = n + 1
  end
end
return n
"""

# Delete the lease only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Claim(StrEnum):
    NEW = "new"  # this delivery holds the lease: run the handler
    DONE = "done"  # already handled by the group: acknowledge, do not run
    BUSY = "busy"  # another delivery of the same id holds the lease: wait


_CODES = {1: Claim.NEW, 2: Claim.DONE, 0: Claim.BUSY}


class Idempotency:
    """The dedupe keys of one consumer group."""

    def __init__(self, redis: Redis, keys: Keys, group: str, lease: float, ttl: float) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self.lease_ms = max(1, int(lease * 1000))
        self.ttl_ms = max(1, int(ttl * 1000))
        self.token = f"lease:{os.getpid()}:{os.urandom(4).hex()}"
        # every key is this prefix + the event id: a concatenation per event instead of a method call and an
        # f-string (each event's key is built twice, for the claim and for the marker)
        self._prefix = keys.seen(group, "")
        if keys.seen(group, "id") != self._prefix + "id":  # pragma: no cover - caught at start-up
            raise RuntimeError("Keys.seen no longer ends with the event id: update Idempotency.key")
        self._claim_script = redis.register_script(_CLAIM)
        self._done_script = redis.register_script(_MARK_DONE)
        self._release_script = redis.register_script(_RELEASE)
        self._extend_script = redis.register_script(_EXTEND)

    def key(self, event_id: str) -> str:
        """The key of ``event_id`` (:meth:`~.keys.Keys.seen`)."""
        return self._prefix + event_id

    async def claim_many(self, event_ids: Sequence[str]) -> list[Claim]:
        """Try to take the lease of each id: one round trip (a Lua script) for the whole batch."""
        if not event_ids:
            return []
        prefix = self._prefix
        keys = [prefix + e for e in event_ids]
        if is_cluster(self.redis):
            codes = await self._claim_script(keys=keys, args=[self.token, self.lease_ms])
        else:
            codes = await self._claim_packed(keys)
        return [_CODES[int(c)] for c in codes]

    async def _claim_packed(self, keys: list[str]) -> list[Any]:
        """The claim script on one server, packed in C and read by hand (:func:`~.streams.exchange`): as
        ``EVALSHA``, sent again as ``EVAL`` when the server answers ``NOSCRIPT`` (its script cache was lost),
        as redis-py's ``Script`` does, without its per-command machinery (a few µs per read batch)."""
        tail = (len(keys), *keys, self.token, self.lease_ms)
        sha = self._claim_script.sha
        pack: Any = hiredis.pack_command
        (reply,) = await exchange(self.redis, pack(("EVALSHA", sha, *tail)), 1)
        if isinstance(reply, NoScriptError):
            (reply,) = await exchange(self.redis, pack(("EVAL", _CLAIM, *tail)), 1)
        if isinstance(reply, ResponseError):
            raise reply
        if type(reply) is not list or len(reply) != len(keys):
            raise InvalidResponse(f"claim script: expected {len(keys)} codes")
        return reply

    async def claim(self, event_id: str) -> Claim:
        return (await self.claim_many([event_id]))[0]

    async def mark_done(self, pipe: Pipeline, event_ids: Sequence[str]) -> None:
        """Queue the ``done`` markers of ``event_ids`` on ``pipe`` (sent with the acknowledgement)."""
        if event_ids:
            prefix = self._prefix
            await queue_script(pipe, self._done_script, [prefix + e for e in event_ids], [self.ttl_ms])

    def pack_mark_done(self, event_ids: Sequence[str]) -> bytes:
        """The ``done`` markers of ``event_ids`` as one packed ``EVAL`` request (for a hand-read exchange on one
        server, :func:`~.streams.exchange`; a cluster uses :meth:`mark_done`)."""
        prefix = self._prefix
        pack: Any = hiredis.pack_command
        request: bytes = pack(("EVAL", _MARK_DONE, len(event_ids), *[prefix + e for e in event_ids], self.ttl_ms))
        return request

    async def extend(self, pipe: Pipeline, event_ids: Sequence[str]) -> None:
        """Queue on ``pipe`` the compare-and-extend of the leases of ``event_ids`` this process holds: each
        key still holding our token gets ``lease`` milliseconds again; ``done`` markers, other holders'
        leases and missing keys are left alone (one Lua call for the whole batch)."""
        if event_ids:
            await queue_script(pipe, self._extend_script, [self.key(e) for e in event_ids], [self.token, self.lease_ms])

    async def release(self, event_id: str) -> None:
        """Give the lease back after a failure so a retry can take it."""
        await self._release_script(keys=[self.key(event_id)], args=[self.token])

    async def is_done(self, event_id: str) -> bool:
        """True when the group handled ``event_id`` (read as bytes: a foreign value cannot raise)."""
        return bool(await raw(self.redis, "GET", self.key(event_id)) == DONE.encode())
