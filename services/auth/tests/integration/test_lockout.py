"""Log-in lockout keyed on the identity it protects: wrong passwords count per (account, client network) with a
per-account ceiling that clients known to the account pass; wrong passwords live in MongoDB (a Redis flush does
not lift them), attempts under way are marks in Redis (counted in MongoDB when Redis is unreachable); a block
emits ``user.login_blocked`` once; IPv6 clients are grouped by their /64.

Clients are told apart by ``X-Forwarded-For`` from a trusted proxy (the test client is 127.0.0.1)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from fakes_auth import RecordingOutbox
from helpers_auth import GOOD_PASSWORD, Account, AuthApp, code_at
from pymongo import AsyncMongoClient, monitoring
from redis.asyncio import Redis

from novapulse_auth.errors import AccountLocked
from novapulse_auth.lockout import LoginGuard, _digest, known_client_hash
from novapulse_auth.repository import Repository, user_doc
from novapulse_devkit.servers import free_port

pytestmark = pytest.mark.integration

PROXY = {"trusted_proxies": "127.0.0.1/32"}
WRONG = "Wrong-password-1"


@pytest.fixture
def fresh_redis(server_factory: Callable[..., Any]) -> str:
    return f"redis://127.0.0.1:{server_factory('redis').port}/0"


async def _login(app: AuthApp, email: str, password: str, client: str) -> Any:
    return await app.post("/login", {"email": email, "password": password}, headers={"X-Forwarded-For": client})


async def _blocked_events(app: AuthApp, acct: Account) -> list[dict[str, Any]]:
    return [e["data"] for e in await app.events("user.login_blocked") if e["data"]["user_id"] == acct.user_id]


async def test_wrong_passwords_block_the_client_not_the_owner(make_app: Callable[..., Any], fresh_redis: str) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, login_account_limit=5, login_account_ceiling=50, **PROXY)
    owner = await app.register()
    assert (await _login(app, owner.email, GOOD_PASSWORD, "198.51.100.20")).status == 200  # B signs in: known
    for _ in range(5):
        assert (await _login(app, owner.email, WRONG, "203.0.113.66")).status == 401  # the attacker, A
    resp = await _login(app, owner.email, GOOD_PASSWORD, "203.0.113.66")
    assert resp.status == 429  # A is blocked even with the right password
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.content_type == "application/problem+json"
    assert (await _login(app, owner.email, GOOD_PASSWORD, "198.51.100.20")).status == 200  # the owner, B
    assert (await _login(app, owner.email, GOOD_PASSWORD, "192.0.2.30")).status == 200  # any other client too

    # one event for the block, however often A keeps knocking
    for _ in range(3):
        assert (await _login(app, owner.email, WRONG, "203.0.113.66")).status == 429
    [event] = await _blocked_events(app, owner)
    assert event["scope"] == "client"
    assert event["ip"] == "203.0.113.66"
    assert event["failures"] == 5
    assert 1 <= event["retry_after_s"] <= 300
    [fields] = [e["fields"] for e in await app.events("user.login_blocked")]
    assert fields["org_id"] == owner.org_id


async def test_the_per_account_ceiling_passes_known_clients_only(
    make_app: Callable[..., Any], fresh_redis: str
) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, login_account_limit=2, login_account_ceiling=4, **PROXY)
    owner = await app.register()
    assert (await _login(app, owner.email, GOOD_PASSWORD, "198.51.100.20")).status == 200  # known client
    # two attackers, each within its own per-client budget, reach the account's ceiling together
    for client in ("203.0.113.1", "203.0.113.2"):
        for _ in range(2):
            assert (await _login(app, owner.email, WRONG, client)).status == 401
    resp = await _login(app, owner.email, GOOD_PASSWORD, "192.0.2.99")  # never signed in here: held back
    assert resp.status == 429
    assert (await _login(app, owner.email, WRONG, "192.0.2.98")).status == 429  # nor may it guess
    assert (await _login(app, owner.email, GOOD_PASSWORD, "198.51.100.20")).status == 200  # known: let through
    scopes = sorted(e["scope"] for e in await _blocked_events(app, owner))
    assert scopes == ["account", "client", "client"]  # each block once

    # an unknown address is treated exactly alike (no enumeration through the 429)
    ghost = app.unique_email("ghost")
    statuses = [(await _login(app, ghost, WRONG, "203.0.113.9")).status for _ in range(3)]
    assert statuses == [401, 401, 429]


async def test_counters_survive_a_redis_flush_and_ipv6_counts_per_64(
    make_app: Callable[..., Any], fresh_redis: str
) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, login_account_limit=3, login_account_ceiling=50, **PROXY)
    owner = await app.register()
    for i in range(3):  # three addresses of one /64 are one client
        assert (await _login(app, owner.email, WRONG, f"2001:db8:5:5::{i + 1}")).status == 401
    redis = Redis.from_url(fresh_redis)
    await redis.flushall()
    await redis.aclose()
    assert (await _login(app, owner.email, GOOD_PASSWORD, "2001:db8:5:5:ffff::1")).status == 429
    assert (await _login(app, owner.email, GOOD_PASSWORD, "2001:db8:5:6::1")).status == 200  # the next /64


async def test_a_right_password_resets_the_clients_count(make_app: Callable[..., Any], fresh_redis: str) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, login_account_limit=3, login_account_ceiling=50, **PROXY)
    owner = await app.register()
    for _ in range(2):
        assert (await _login(app, owner.email, WRONG, "198.51.100.5")).status == 401
    assert (await _login(app, owner.email, GOOD_PASSWORD, "198.51.100.5")).status == 200
    for _ in range(2):
        assert (await _login(app, owner.email, WRONG, "198.51.100.5")).status == 401
    assert (await _login(app, owner.email, GOOD_PASSWORD, "198.51.100.5")).status == 200
    user = await app.rt.db["users"].find_one({"_id": owner.user_id})
    assert user is not None
    known = user["known_clients"]
    assert len(known) == 2  # the test client of register() and this one, stored hashed
    assert all("198.51.100.5" not in k for k in known)


async def test_eleven_logins_from_one_ipv6_64_are_limited(make_app: Callable[..., Any], fresh_redis: str) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, login_ip_limit=10, **PROXY)
    statuses = [
        (await _login(app, f"n{i}@example.com", WRONG, f"2001:db8:abcd:12:{i + 1:x}::7")).status for i in range(11)
    ]
    assert statuses == [401] * 10 + [429]
    assert (await _login(app, "n@example.com", WRONG, "2001:db8:abcd:13::7")).status == 401


async def _two_wrong_then_a_burst(app: AuthApp, email: str, client: str) -> None:
    """Two wrong passwords from ``client`` (limit 3: one attempt left), then a burst of six in parallel: at most
    one of them has its password checked (401), the others are refused (429)."""
    for _ in range(2):
        assert (await _login(app, email, WRONG, client)).status == 401
    burst = await asyncio.gather(*(_login(app, email, WRONG, client) for _ in range(6)))
    statuses = [r.status for r in burst]
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) <= 1  # one attempt was left: at most one password was checked


async def test_parallel_guesses_cannot_slip_under_the_limit(make_app: Callable[..., Any], fresh_redis: str) -> None:
    app: AuthApp = await make_app(redis_url=fresh_redis, login_account_limit=3, login_account_ceiling=50, **PROXY)
    owner = await app.register()
    await _two_wrong_then_a_burst(app, owner.email, "203.0.113.77")
    for _ in range(2):  # whatever the burst left, the next attempts end in the block
        last = await _login(app, owner.email, WRONG, "203.0.113.77")
    assert last.status == 429
    assert len(await _blocked_events(app, owner)) == 1


async def test_the_password_without_the_second_factor_makes_no_client_known(
    make_app: Callable[..., Any], fresh_redis: str
) -> None:
    """Someone with the password but not the second factor signs in from 10 networks and never answers the
    challenge: the owner's known network stays known (gets in past the ceiling). Completing MFA from a network
    makes it known."""
    app: AuthApp = await make_app(redis_url=fresh_redis, login_account_limit=2, login_account_ceiling=4, **PROXY)
    owner = await app.register()
    assert (await _login(app, owner.email, GOOD_PASSWORD, "198.51.100.20")).status == 200  # the owner's network
    await app.enable_mfa(owner)
    for i in range(1, 11):  # KNOWN_CLIENTS_MAX new networks: right password, challenge left unanswered
        resp = await _login(app, owner.email, GOOD_PASSWORD, f"203.0.113.{i}")
        assert resp.status == 200
        assert (await resp.json())["mfa_required"] is True
    user = await app.services.repo.user(owner.org_id, owner.user_id)
    assert user is not None
    assert known_client_hash(owner.user_id, "203.0.113.1") not in user["known_clients"]
    assert known_client_hash(owner.user_id, "198.51.100.20") in user["known_clients"]

    # completing the second factor from a new network makes that network known
    resp = await _login(app, owner.email, GOOD_PASSWORD, "192.0.2.50")
    challenge = (await resp.json())["mfa_token"]
    resp = await app.post(
        "/mfa/verify",
        {"mfa_token": challenge, "code": code_at(owner.totp_secret, 1)},
        headers={"X-Forwarded-For": "192.0.2.50"},
    )
    assert resp.status == 200, await resp.text()

    for client in ("203.0.113.1", "203.0.113.2"):  # the ceiling is reached
        for _ in range(2):
            assert (await _login(app, owner.email, WRONG, client)).status == 401
    assert (await _login(app, owner.email, GOOD_PASSWORD, "192.0.2.99")).status == 429  # never signed in
    assert (await _login(app, owner.email, GOOD_PASSWORD, "203.0.113.3")).status == 429  # password only
    assert (await _login(app, owner.email, GOOD_PASSWORD, "198.51.100.20")).status == 200  # still known
    assert (await _login(app, owner.email, GOOD_PASSWORD, "192.0.2.50")).status == 200  # known through MFA


class _Commands(monitoring.CommandListener):
    """The commands sent to one database while ``on`` (pymongo copies global listeners into each client it creates:
    registered before the app starts, inert outside the test that reads it)."""

    def __init__(self) -> None:
        self.db = ""
        self.on = False
        self.sent: list[tuple[str, str]] = []
        self.filters: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.on and event.database_name == self.db:
            self.sent.append((event.command_name, str(event.command.get(event.command_name))))
            cmd = event.command
            self.filters += [cmd["filter"]] if "filter" in cmd else [d["q"] for d in cmd.get("deletes", [])]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


async def test_a_log_in_counts_its_attempt_with_bounded_reads(make_app: Callable[..., Any], fresh_redis: str) -> None:
    """The lockout's share of a successful log-in: the attempt is a mark in Redis; a client the account knows reads
    no failure while the account's ``login_failed_ts`` is older than the window, one bounded read of this client's
    failures once a wrong password is newer, and a client it does not know always reads this client's and the
    account's failures; no count over every failure (``count_documents`` reads all that match), nothing written and
    deleted per attempt. The whole log-in is three commands from a known client (issue 15: database round trips are
    most of a log-in's cost beside the argon2id verify). A wrong password costs one command more for a registered
    address and an unknown one alike."""
    commands = _Commands()
    monitoring.register(commands)
    app: AuthApp = await make_app(redis_url=fresh_redis, key_reload_interval=3600, **PROXY)
    commands.db = app.settings.database_name()
    owner = await app.register()
    assert (await _login(app, owner.email, GOOD_PASSWORD, "198.51.100.20")).status == 200  # now known

    async def sent(client: str, email: str = owner.email, password: str = GOOD_PASSWORD) -> list[tuple[str, str]]:
        commands.sent.clear()
        commands.filters.clear()
        commands.on = True
        try:
            status = (await _login(app, email, password, client)).status
            assert status == (200 if password == GOOD_PASSWORD else 401)
        finally:
            commands.on = False
        return list(commands.sent)

    known = await sent("198.51.100.20")
    # user, the session (holding the first refresh token), the user again; the attempt itself is a mark in Redis
    # (one script to add and count, one to remove), no longer a document written and deleted
    assert [c for c in known if c[1] == "login_failures"] == [], known
    assert len(known) == 3, known
    # every equality is written $eq (runtime documents.by_index): nx-27017 turns a plain one into a scan
    plain = [(k, v) for f in commands.filters for k, v in f.items() if k != "_id" and not isinstance(v, dict)]
    assert plain == []
    unknown = await sent("192.0.2.77")
    assert [c for c in unknown if c[1] == "login_failures"] == [
        ("find", "login_failures"),
        ("find", "login_failures"),
    ]
    # a wrong password (from anywhere) raises login_failed_ts: the known client reads its failures for a window
    wrong = await sent("203.0.113.8", password=WRONG)
    nobody = await sent("203.0.113.8", email="nobody@example.com", password=WRONG)
    assert [c[0] for c in wrong] == [c[0] for c in nobody]  # the same commands for an unknown address
    assert ("update", "users") in wrong
    known = await sent("198.51.100.20")
    assert [c for c in known if c[1] == "login_failures"] == [("find", "login_failures")]
    assert await app.rt.db["login_failures"].count_documents({}) == 2  # the two wrong passwords
    # five minutes later (the stored times moved back a window): the wrong password is out of it, the read spared
    gone = time.time() - 301
    await app.rt.db["login_failures"].update_many({}, {"$set": {"ts": gone}})
    await app.rt.db["users"].update_one({"_id": owner.user_id}, {"$set": {"login_failed_ts": gone}})
    assert [c for c in await sent("198.51.100.20") if c[1] == "login_failures"] == []
    redis = Redis.from_url(fresh_redis)
    try:  # every attempt's in-flight marks are gone again (empty sorted sets are deleted)
        assert [k async for k in redis.scan_iter(match="*login-inflight*")] == []
    finally:
        await redis.aclose()


def _guard(repo: Repository, redis: Redis, *, limit: int, namespace: str) -> LoginGuard:
    return LoginGuard(
        repo, RecordingOutbox(), redis, client_limit=limit, account_ceiling=50, window=300, namespace=namespace
    )


async def test_attempts_under_way_count_until_they_end(redis_url: str, mongo_url: str, names: str) -> None:
    """Attempts in flight are marks in Redis and count as failures: with a limit of 2, two attempts under way
    (say of a process that is still hashing, or died mid-log-in) hold back a third until one ends."""
    client = AsyncMongoClient(mongo_url, tz_aware=True)
    redis = Redis.from_url(redis_url)
    try:
        repo = Repository(client[names])
        await repo.ensure_indexes()
        guard = _guard(repo, redis, limit=2, namespace=names)
        first = await guard.begin("a@example.com", "203.0.113.5", None)
        second = await guard.begin("a@example.com", "203.0.113.5", None)
        with pytest.raises(AccountLocked) as refused:
            await guard.begin("a@example.com", "203.0.113.5", None)
        assert refused.value.retry_after >= 299  # blocked by attempts of now: a whole window, were they wrong
        other = await guard.begin("a@example.com", "198.51.100.1", None)  # another client is not held back
        await guard.succeeded(other)
        await guard.succeeded(first)
        third = await guard.begin("a@example.com", "203.0.113.5", None)  # one ended: room again
        await guard.failed(second, None, "203.0.113.5")  # a wrong password: now a document, still counted
        with pytest.raises(AccountLocked):
            await guard.begin("a@example.com", "203.0.113.5", None)
        await guard.failed(third, None, "203.0.113.5")
        assert await repo.login_failures.count_documents({}) == 2
        with pytest.raises(AccountLocked):  # two wrong passwords: blocked with nothing in flight
            await guard.begin("a@example.com", "203.0.113.5", None)
        assert [k async for k in redis.scan_iter(match=f"{names}:auth:login-inflight*")] == []
    finally:
        await redis.aclose()
        await client.close()


async def test_without_redis_attempts_are_counted_in_mongodb(mongo_url: str, names: str) -> None:
    """Redis unreachable: the lockout neither fails open nor closed; each attempt is a failure document written
    before the check and taken back on success, so a parallel burst still checks at most the attempts left."""
    client = AsyncMongoClient(mongo_url, tz_aware=True)
    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)  # nothing listens
    try:
        repo = Repository(client[names])
        await repo.ensure_indexes()
        guard = _guard(repo, redis, limit=3, namespace=names)
        ok = await guard.begin("b@example.com", "203.0.113.9", None)
        assert not ok.marked
        await guard.succeeded(ok)
        assert await repo.login_failures.count_documents({}) == 0  # taken back
        for _ in range(2):
            await guard.failed(await guard.begin("b@example.com", "203.0.113.9", None), None, "203.0.113.9")
        burst = await asyncio.gather(
            *(guard.begin("b@example.com", "203.0.113.9", None) for _ in range(6)), return_exceptions=True
        )
        began = [a for a in burst if not isinstance(a, BaseException)]
        assert all(isinstance(a, AccountLocked) for a in burst if isinstance(a, BaseException))
        assert len(began) <= 1  # one attempt was left
        for attempt in began:
            await guard.failed(attempt, None, "203.0.113.9")
        for _ in range(2):  # the burst may have refused all six (each saw the others in flight): fill the budget
            try:
                await guard.failed(await guard.begin("b@example.com", "203.0.113.9", None), None, "203.0.113.9")
            except AccountLocked:
                break
        with pytest.raises(AccountLocked):
            await guard.begin("b@example.com", "203.0.113.9", None)
    finally:
        await redis.aclose()
        await client.close()


async def test_parallel_guesses_from_a_known_client_cannot_slip_under_the_limit(
    make_app: Callable[..., Any], fresh_redis: str
) -> None:
    """A client the account knows skips the failure read while ``login_failed_ts`` is older than the window; a
    wrong password raises it before its mark goes, so later attempts from that client read again and a burst
    still checks at most the attempts left."""
    app: AuthApp = await make_app(redis_url=fresh_redis, login_account_limit=3, login_account_ceiling=50, **PROXY)
    owner = await app.register()
    assert (await _login(app, owner.email, GOOD_PASSWORD, "198.51.100.40")).status == 200  # now known
    await _two_wrong_then_a_burst(app, owner.email, "198.51.100.40")
    for _ in range(2):
        last = await _login(app, owner.email, GOOD_PASSWORD, "198.51.100.40")
    assert last.status == 429  # the known client is blocked like any other, right password or not


async def _user(repo: Repository, email: str, *, known: str | None = None, failed_ts: float | None = 0.0) -> Any:
    doc = user_doc(email=email, name="U", org_id="o1", role="owner", password_hash="x")
    if known is not None:
        doc["known_clients"] = [known_client_hash(doc["_id"], "203.0.113.5")]
    if failed_ts is None:
        del doc["login_failed_ts"]
    else:
        doc["login_failed_ts"] = failed_ts
    await repo.insert_user(doc)
    return doc


async def test_a_known_client_reads_the_user_after_its_mark(redis_url: str, mongo_url: str, names: str) -> None:
    """The user (and its ``login_failed_ts``) is read once the attempt's mark is in Redis, never before: a
    wrong password that ends before the mark is added has raised the field, and one that ends after it was
    counted as in flight. So a known client's skipped read misses no wrong password."""
    client = AsyncMongoClient(mongo_url, tz_aware=True)
    redis = Redis.from_url(redis_url)
    try:
        repo = Repository(client[names])
        await repo.ensure_indexes()
        user = await _user(repo, "k@example.com", known="203.0.113.5")
        guard = _guard(repo, redis, limit=1, namespace=names)
        marks_seen: list[int] = []

        async def find_user() -> Any:
            marks_seen.append(len([k async for k in redis.scan_iter(match=f"{names}:auth:login-inflight*")]))
            return await repo.user_by_email("k@example.com")

        first = await guard.begin("k@example.com", "203.0.113.5", find_user)
        assert marks_seen == [2]  # the (account, client) and the account's marks were there
        assert first.user is not None
        assert first.user["_id"] == user["_id"]
        await guard.failed(first, first.user, "203.0.113.5")
        stored = await repo.user_by_email("k@example.com")
        assert stored is not None
        assert stored["login_failed_ts"] > 0
        with pytest.raises(AccountLocked):  # limit 1: the wrong password is read, though the client is known
            await guard.begin("k@example.com", "203.0.113.5", find_user)
        assert [k async for k in redis.scan_iter(match=f"{names}:auth:login-inflight*")] == []
    finally:
        await redis.aclose()
        await client.close()


async def test_an_attempt_counted_in_mongodb_holds_back_a_known_client(
    redis_url: str, mongo_url: str, names: str
) -> None:
    """A process that cannot reach Redis counts its attempt as a failure document and raises
    ``login_failed_ts`` before its reads, so an attempt from a known client on a process that can reach Redis
    reads it instead of skipping; and a user stored before ``login_failed_ts`` existed is read until a log-in sets
    it (to the time of that log-in)."""
    client = AsyncMongoClient(mongo_url, tz_aware=True)
    redis = Redis.from_url(redis_url)
    down = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)  # nothing listens
    try:
        repo = Repository(client[names])
        await repo.ensure_indexes()
        await _user(repo, "m@example.com", known="203.0.113.5")
        up_guard = _guard(repo, redis, limit=1, namespace=names)
        down_guard = _guard(repo, down, limit=1, namespace=names)

        async def find_user() -> Any:
            return await repo.user_by_email("m@example.com")

        elsewhere = await down_guard.begin("m@example.com", "203.0.113.5", find_user)  # under way, in MongoDB
        assert not elsewhere.marked
        with pytest.raises(AccountLocked):
            await up_guard.begin("m@example.com", "203.0.113.5", find_user)
        await down_guard.succeeded(elsewhere)  # taken back: room again
        ok = await up_guard.begin("m@example.com", "203.0.113.5", find_user)
        await up_guard.succeeded(ok)

        old = await _user(repo, "old@example.com", known="203.0.113.5", failed_ts=None)
        assert old["_id"]
        # a wrong password stored by a version without login_failed_ts: the field's absence is no licence to skip
        pair = _digest("pair", "old@example.com", "203.0.113.5")
        await repo.insert_login_failure("old-1", _digest("account", "old@example.com"), pair, time.time())
        with pytest.raises(AccountLocked):
            await up_guard.begin("old@example.com", "203.0.113.5", lambda: repo.user_by_email("old@example.com"))
        await repo.delete_login_failure("old-1")
        before = time.time()
        attempt = await up_guard.begin("old@example.com", "203.0.113.5", lambda: repo.user_by_email("old@example.com"))
        await up_guard.succeeded(attempt)
        assert attempt.user is not None
        await up_guard.remember(attempt.user, "203.0.113.5")
        stored = await repo.user_by_email("old@example.com")
        assert stored is not None
        assert stored["login_failed_ts"] >= before
    finally:
        await redis.aclose()
        await down.aclose()
        await client.close()
