"""Revoked sessions are refused by the shared verifier within the documented window (1 s), from the pushed
local copy, after a reload, and with Redis gone (fail closed, 503). Real redis-server, no mocks."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from novapulse_devkit.testing import TokenIssuer, wait_until
from novapulse_runtime.problems import ProblemError
from novapulse_runtime.revocation import STALE_AFTER, RevocationList, publish_revocations, restore_revocations
from novapulse_runtime.tokens import TokenVerifier

pytestmark = pytest.mark.integration

WINDOW = 1.0  # the documented revocation window (services/auth/README.md)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def make_verifier(issuer: TokenIssuer, client: Redis, namespace: str) -> TokenVerifier:
    return TokenVerifier(
        issuer.jwks_url,
        issuer=issuer.issuer,
        audience=issuer.audience,
        revocations=RevocationList(client, namespace),
    )


async def status_of(verifier: TokenVerifier, token: str) -> int:
    try:
        await verifier.verify(token)
    except ProblemError as exc:
        return exc.status
    return 200


def expiry() -> float:
    return time.time() + 300


async def test_pushed_revocation_is_honoured_within_the_window(
    token_issuer: TokenIssuer, redis: Redis, names: str
) -> None:
    verifier = make_verifier(token_issuer, redis, names)
    sid = uuid.uuid4().hex
    token = token_issuer.mint("u1", "o1", sid=sid)
    other = token_issuer.mint("u2", "o1")
    try:
        assert (await verifier.verify(token)).session_id == sid
        assert verifier.revocations is not None
        revocations = verifier.revocations
        await wait_until(lambda: revocations.synced, timeout=5, message="subscription")
        await publish_revocations(redis, names, {sid: expiry()})
        await wait_until(lambda: sid in revocations._revoked, timeout=WINDOW, message="push reached the local copy")
        assert revocations.synced  # answered from the local copy, not by a fallback round trip
        assert await status_of(verifier, token) == 401
        assert await status_of(verifier, other) == 200  # only that session
        # a revocation in another namespace (another deployment / test) does not reach this verifier
        foreign = uuid.uuid4().hex
        await publish_revocations(redis, names + "x", {foreign: expiry()})
        assert await status_of(verifier, token_issuer.mint("u3", "o1", sid=foreign)) == 200
    finally:
        await verifier.close()


async def test_revocations_made_before_start_are_loaded(token_issuer: TokenIssuer, redis: Redis, names: str) -> None:
    sid, expired_sid = uuid.uuid4().hex, uuid.uuid4().hex
    await publish_revocations(redis, names, {sid: expiry(), expired_sid: time.time() - 1})
    verifier = make_verifier(token_issuer, redis, names)
    try:
        # before the subscription is in place, the check asks Redis directly
        assert await status_of(verifier, token_issuer.mint("u1", "o1", sid=sid)) == 401
        assert verifier.revocations is not None
        revocations = verifier.revocations
        await wait_until(lambda: revocations.synced, timeout=5, message="subscription")
        assert sid in revocations._revoked  # the full reload after subscribing
        assert await status_of(verifier, token_issuer.mint("u1", "o1", sid=sid)) == 401
        # an entry past its expiry (no token of that session can still be valid) is not kept
        assert expired_sid not in revocations._revoked
    finally:
        await verifier.close()


async def test_token_without_session_id_is_refused(token_issuer: TokenIssuer, redis: Redis, names: str) -> None:
    verifier = make_verifier(token_issuer, redis, names)
    try:
        assert await status_of(verifier, token_issuer.mint("u1", "o1", sid="")) == 401
        assert await status_of(verifier, token_issuer.mint("u1", "o1", sid=7)) == 401
        assert await status_of(verifier, token_issuer.mint("u1", "o1")) == 200
    finally:
        await verifier.close()


async def test_redis_outage_fails_closed_then_recovers(
    token_issuer: TokenIssuer, server_factory: Callable[..., Any], names: str
) -> None:
    server = server_factory("redis")
    client = Redis.from_url(f"redis://127.0.0.1:{server.port}/0", decode_responses=True, socket_timeout=1.0)
    verifier = make_verifier(token_issuer, client, names)
    token = token_issuer.mint("u1", "o1")
    try:
        assert await status_of(verifier, token) == 200
        assert verifier.revocations is not None
        revocations = verifier.revocations
        await wait_until(lambda: revocations.synced, timeout=5, message="subscription")
        server.kill()
        # within STALE_AFTER the copy is no longer trusted and nothing can answer: 503, not a pass
        await wait_until(lambda: not revocations.synced, timeout=STALE_AFTER + 0.5, message="copy marked stale")
        with pytest.raises(ProblemError) as info:
            await verifier.verify(token)
        assert info.value.status == 503
        server.start()
        await wait_until(lambda: revocations.synced, timeout=10, message="resubscribed")
        sid = uuid.uuid4().hex
        await publish_revocations(client, names, {sid: expiry()})
        revoked_token = token_issuer.mint("u1", "o1", sid=sid)

        async def refused() -> bool:
            return await status_of(verifier, revoked_token) == 401

        await wait_until(refused, timeout=WINDOW, message="revocation after the outage")
        assert await status_of(verifier, token) == 200
    finally:
        await verifier.close()
        await client.aclose()


async def test_restore_after_redis_lost_its_data(
    token_issuer: TokenIssuer, server_factory: Callable[..., Any], names: str
) -> None:
    server = server_factory("redis")
    client = Redis.from_url(f"redis://127.0.0.1:{server.port}/0", decode_responses=True)
    verifier = make_verifier(token_issuer, client, names)
    sid = uuid.uuid4().hex
    token = token_issuer.mint("u1", "o1", sid=sid)
    try:
        assert await status_of(verifier, token) == 200
        assert verifier.revocations is not None
        revocations = verifier.revocations
        await wait_until(lambda: revocations.synced, timeout=5, message="subscription")
        await publish_revocations(client, names, {sid: expiry()})
        await wait_until(lambda: sid in revocations._revoked, timeout=WINDOW, message="push")
        await client.flushall()
        # the issuer's database still knows: restoring re-adds the entry and makes every verifier reload
        assert await restore_revocations(client, names, {sid: expiry()}) == 1
        assert await restore_revocations(client, names, {sid: expiry() - 10}) == 0  # already there
        assert await client.zscore(f"{names}:auth:revoked-sessions", sid) is not None
        assert await status_of(verifier, token) == 401
    finally:
        await verifier.close()
        await client.aclose()


async def test_a_reload_keeps_what_this_process_revoked_itself(redis: Redis, names: str) -> None:
    """The issuer notes its own revocations with add(); if its push to Redis failed, a reload (after Redis
    lost its data, say) must not forget them before the issuer's sync rewrites them."""
    revocations = RevocationList(redis, names)
    own, gone = uuid.uuid4().hex, uuid.uuid4().hex
    try:
        revocations.add({own: expiry(), gone: time.time() - 1})  # never reached Redis
        revocations.start()
        await wait_until(lambda: revocations.synced, timeout=5, message="subscription (and its first reload)")
        # a session only a reload can bring in (written to the set without a push), then a reload request
        marker = uuid.uuid4().hex
        await redis.zadd(f"{names}:auth:revoked-sessions", {marker: expiry()})
        await redis.publish(f"{names}:auth:revocations", '{"reload": true}')
        await wait_until(lambda: marker in revocations._revoked, timeout=5, message="reloaded")
        assert await revocations.is_revoked(own) is True
        assert await revocations.is_revoked(gone) is False
    finally:
        await revocations.close()
