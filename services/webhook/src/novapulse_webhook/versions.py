"""Read-your-writes for the worker's endpoint caches: a per-organisation version token in Redis.

Every write to an organisation's endpoints (create, change, delete, secret rotation, disabling by the worker)
sets ``<namespace>:webhook:endpoints-version:<org_id>`` to a fresh random token after the database write and
before the API answers. The worker reads that token (one ``GET``) before it trusts a cached endpoint list or
endpoint, and reloads from MongoDB when it changed. Redis is one linearisable server for these keys, so an
event that happens after the API answered is handled with the write visible: no waiting out a cache
lifetime. (A random token rather than a counter: a Redis that lost its data cannot hand out an old number
again and make a stale cache look current.)

If Redis cannot be reached the version is unknown: the API logs the failed write, and the worker falls
back to its short time-to-live (``ENDPOINT_CACHE_TTL``), the bound that applied before versions existed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from novapulse_runtime.batcher import TurnBatcher

log = logging.getLogger("novapulse.webhook.versions")

_OP_TIMEOUT = 1.0  # seconds for one SET or one round trip of GETs


class EndpointVersions:
    """The version counters; ``namespace`` is the bus namespace (``EVENTS_NAMESPACE``)."""

    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self.prefix = f"{namespace}:webhook:endpoints-version:"
        self._warned_at = -float("inf")
        self._reads: TurnBatcher[str, str | None] = TurnBatcher(self._read, shared=True)

    def key(self, org_id: str) -> str:
        """The Redis key of the organisation's version."""
        return self.prefix + org_id

    async def bump(self, org_id: str) -> None:
        """Announce that the organisation's endpoints changed (never raises; a failure is logged)."""
        try:
            async with asyncio.timeout(_OP_TIMEOUT):
                await self.redis.set(self.key(org_id), uuid.uuid4().hex)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning(
                "cannot renew the endpoint version; workers see the change within the cache lifetime",
                extra={"org_id": org_id, "error": repr(exc)},
            )

    async def current(self, org_id: str) -> str | None:
        """The organisation's version (``"-"`` when never written), or None when Redis cannot be reached.

        Reads asked for in the same turn of the event loop go out together (the runtime's
        :class:`~novapulse_runtime.batcher.TurnBatcher`), as one pipelined round trip sent after the last of
        them asked: each caller still reads the token after it asked (read-your-writes holds), and a burst of
        attempts and fan-outs costs one round trip instead of one per caller."""
        return await self._reads.ask(org_id)

    async def _read(self, org_ids: list[str]) -> list[str | None]:
        values: list[Any]
        try:
            async with asyncio.timeout(_OP_TIMEOUT):
                if len(org_ids) == 1:
                    values = [await self.redis.get(self.key(org_ids[0]))]
                else:
                    pipe = self.redis.pipeline(transaction=False)
                    for org_id in org_ids:
                        pipe.get(self.key(org_id))
                    values = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            if time.monotonic() - self._warned_at >= 60.0:  # at most once a minute: this is the event path
                self._warned_at = time.monotonic()
                log.warning(
                    "cannot read the endpoint version; workers follow endpoint changes within the cache lifetime",
                    extra={"org_ids": org_ids[:10], "error": repr(exc)},
                )
            return [None] * len(org_ids)
        return ["-" if v is None else v.decode() if isinstance(v, bytes) else str(v) for v in values]
