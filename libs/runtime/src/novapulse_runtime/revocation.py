"""Session revocation that every service's token verifier honours within a second.

An access token (RFC 9068 JWT) is self-contained: without more, a verifier accepts it until ``exp`` even after
its session was logged out or its user disabled. The auth service therefore names the session in every
token (claim ``sid``) and, when a session is revoked, writes the session id to Redis:

- ``<ns>:auth:revoked-sessions`` — a sorted set, member = session id, score = epoch seconds after which no
  access token of that session can still be valid (revocation time + access-token lifetime + leeway), so
  the set only ever holds the last ``ACCESS_TOKEN_TTL`` worth of revocations;
- ``<ns>:auth:revocations`` — a pub/sub channel: ``{"sids": {"<sid>": <expiry>, ...}}`` for new
  revocations, ``{"reload": true}`` when the set was rebuilt (after Redis lost its data).

Each verifier process keeps a local copy (:class:`RevocationList`) so that the per-request cost is a dict
look-up, not a round trip: a background task subscribes to the channel, reloads the whole set after every
(re)subscription (so nothing published while it was away is missed), and pings the server every
``PING_INTERVAL`` seconds to prove the subscription is alive.

When the copy cannot be trusted — before the first subscription, or when no pong came for ``STALE_AFTER``
seconds (Redis down, connection silently dropped, event loop starved) — each check asks Redis directly
(``ZSCORE``, one round trip). When Redis does not answer either, the check **fails closed** with a 503:
a verifier that cannot know whether a token was revoked does not accept it (an admin disabled during a Redis
outage must not keep their power), and the outage already stops events and rate limits. So a revocation is
honoured everywhere within ``STALE_AFTER`` (1 s) plus push latency, whatever happens to the connection.

The auth service's database is the source of truth (sessions carry ``revoked_ts``); the auth worker rewrites
recent revocations into the set when Redis lost them (see ``services/auth/README.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .problems import ProblemError
from .redisconn import is_cluster, open_pubsub

log = logging.getLogger(__name__)

SET_SEGMENT = "auth:revoked-sessions"
CHANNEL_SEGMENT = "auth:revocations"

PING_INTERVAL = 0.25
"""Seconds between pings on the subscription connection."""
STALE_AFTER = 1.0
"""Seconds without any sign of life from the subscription after which the local copy is not trusted."""
CHECK_TIMEOUT = 0.5
"""Seconds a per-request ``ZSCORE`` may take before the check fails closed."""
RETRY_MAX = 2.0
"""Longest pause, in seconds, between reconnection attempts of the subscriber."""
PRUNE_INTERVAL = 30.0


def set_key(namespace: str) -> str:
    return f"{namespace}:{SET_SEGMENT}"


def channel_name(namespace: str) -> str:
    return f"{namespace}:{CHANNEL_SEGMENT}"


async def publish_revocations(redis: Redis, namespace: str, sessions: Mapping[str, float]) -> None:
    """Record revoked sessions (``{sid: expiry epoch seconds}``) and push them to every verifier.

    One MULTI/EXEC: ``ZADD`` (keeping the later expiry), drop expired members, ``PUBLISH``. On a Redis Cluster,
    whose pipelines refuse ``PUBLISH``, the MULTI holds the two set commands and the ``PUBLISH`` follows it
    (a cluster's ``PUBLISH`` reaches the subscribers of every node). Raises
    :class:`redis.exceptions.RedisError` when Redis is unreachable (the caller's database stays the truth).
    """
    if not sessions:
        return
    key = set_key(namespace)
    message = json.dumps({"sids": dict(sessions)}, separators=(",", ":"))
    cluster = is_cluster(redis)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(key, dict(sessions), gt=True)
        pipe.zremrangebyscore(key, "-inf", time.time())
        if not cluster:
            pipe.publish(channel_name(namespace), message)
        await pipe.execute()
    if cluster:
        await redis.publish(channel_name(namespace), message)


async def restore_revocations(redis: Redis, namespace: str, sessions: Mapping[str, float]) -> int:
    """Re-add revocations Redis lost (``{sid: expiry}``, from the issuer's database); when any was missing,
    tell verifiers to reload. Returns how many were missing."""
    live = {sid: exp for sid, exp in sessions.items() if exp > time.time()}
    if not live:
        return 0
    added = int(await redis.zadd(set_key(namespace), dict(live), gt=True, ch=True) or 0)
    if added:
        await redis.publish(channel_name(namespace), json.dumps({"reload": True}))
    return added


def _unavailable() -> ProblemError:
    return ProblemError(
        503, "Token revocation cannot be checked right now; retry shortly", headers={"Retry-After": "1"}
    )


class RevocationList:
    """A verifier's local copy of the revoked sessions, kept fresh by a Redis subscription.

    :meth:`is_revoked` is the per-request check: a dict look-up while the subscription is alive, else one
    ``ZSCORE``; raises a 503 :class:`ProblemError` when neither can answer. ``namespace`` is the
    ``EVENTS_NAMESPACE`` setting (``settings.events_namespace``): the set and channel are
    ``<namespace>:auth:revoked-sessions`` and ``<namespace>:auth:revocations``. Created without connecting;
    the subscriber task starts on the first check (inside the running loop) and stops in :meth:`close`.
    """

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        *,
        stale_after: float = STALE_AFTER,
        ping_interval: float = PING_INTERVAL,
        check_timeout: float = CHECK_TIMEOUT,
    ) -> None:
        self._redis = redis
        self.namespace = namespace
        self._key = set_key(self.namespace)
        self._channel = channel_name(self.namespace)
        self._stale_after = stale_after
        self._ping_interval = ping_interval
        self._check_timeout = check_timeout
        self._revoked: dict[str, float] = {}
        self._alive_at = -float("inf")
        self._pruned_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._warned_at = -float("inf")
        self._closing = False
        self._established = False

    @property
    def synced(self) -> bool:
        """True while the local copy can be trusted (the subscription answered within ``stale_after``)."""
        return time.monotonic() - self._alive_at <= self._stale_after

    async def is_revoked(self, sid: str) -> bool:
        """Whether session ``sid`` was revoked. Raises a 503 problem when that cannot be known."""
        self.start()
        if self.synced:
            expiry = self._revoked.get(sid)
            return expiry is not None and expiry > time.time()
        try:
            score = await asyncio.wait_for(self._redis.zscore(self._key, sid), self._check_timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            self._warn("revocation check failed: refusing tokens until Redis answers", exc)
            raise _unavailable() from exc
        return score is not None and float(score) > time.time()

    def add(self, sessions: Mapping[str, float]) -> None:
        """Note revocations this process made itself (``{sid: expiry}``), so it honours them at once rather
        than when its own push comes back."""
        for sid, exp in sessions.items():
            self._revoked[sid] = max(float(exp), self._revoked.get(sid, 0.0))

    def start(self) -> None:
        if self._closing:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="token-revocations")

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        # redis-py can swallow a cancellation that lands inside a connect or read: cancel until it ends
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)

    def _warn(self, message: str, exc: BaseException) -> None:
        if time.monotonic() - self._warned_at >= 60.0:
            self._warned_at = time.monotonic()
            log.warning(message, extra={"error": repr(exc)})

    async def _reload(self) -> None:
        current = time.time()
        rows: list[Any] = await self._redis.zrangebyscore(self._key, current, "+inf", withscores=True)
        reloaded = {str(row[0]): float(row[1]) for row in rows}
        # keep what this process revoked itself (add()) and Redis may not hold yet: a push that failed is
        # rewritten by the issuer's sync, and until then the issuer must still refuse the session
        for sid, expiry in self._revoked.items():
            if expiry > current and expiry > reloaded.get(sid, 0.0):
                reloaded[sid] = expiry
        self._revoked = reloaded

    def _apply(self, data: Any) -> bool:
        """Apply one pushed message; True when the whole set must be reloaded."""
        try:
            message = json.loads(data)
        except (TypeError, ValueError):
            return False
        if not isinstance(message, dict):
            return False
        if message.get("reload") is True:
            return True
        sids = message.get("sids")
        if isinstance(sids, dict):
            self.add({sid: exp for sid, exp in sids.items() if isinstance(sid, str) and isinstance(exp, int | float)})
        return False

    def _prune(self) -> None:
        if time.monotonic() - self._pruned_at >= PRUNE_INTERVAL:
            self._pruned_at = time.monotonic()
            now = time.time()
            self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}

    async def _run(self) -> None:
        pause = 0.05
        while not self._closing:
            pubsub: Any = None
            try:
                pubsub = await open_pubsub(self._redis)
                await self._session(pubsub)
            except (RedisError, OSError, TimeoutError) as exc:
                self._warn("revocation subscription lost; checking Redis per request until it is back", exc)
            finally:
                self._alive_at = -float("inf")
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            pause = 0.05 if self._established else min(pause * 2, RETRY_MAX)  # back off only while failing
            self._established = False
            await asyncio.sleep(pause)

    async def _session(self, pubsub: Any) -> None:
        await pubsub.subscribe(self._channel)
        deadline = time.monotonic() + self._stale_after + 2.0
        while True:  # the confirmation proves the subscription is in place before the reload
            msg = await pubsub.get_message(timeout=self._ping_interval)
            if msg is not None and msg.get("type") == "subscribe":
                break
            if time.monotonic() > deadline:
                raise TimeoutError("no subscription confirmation")
        await self._reload()
        self._alive_at = time.monotonic()
        self._established = True
        pinged_at = time.monotonic()
        unanswered_since: float | None = None  # the oldest ping no message has followed yet
        while not self._closing:
            msg = await pubsub.get_message(timeout=self._ping_interval)
            now = time.monotonic()
            if msg is not None:
                self._alive_at = now
                unanswered_since = None
                kind = msg.get("type")
                # "subscribe" here means redis-py reconnected on its own: anything pushed meanwhile was missed
                if kind == "subscribe" or (kind == "message" and self._apply(msg.get("data"))):
                    await self._reload()
            if now - pinged_at >= self._ping_interval:
                await pubsub.ping()
                pinged_at = now
                unanswered_since = unanswered_since or now
            # dead only when a ping stays unanswered; a starved event loop merely lets ``synced`` lapse (checks
            # go to Redis meanwhile) until the next pong
            if unanswered_since is not None and now - unanswered_since > self._stale_after:
                raise TimeoutError("no pong from Redis")
            self._prune()
