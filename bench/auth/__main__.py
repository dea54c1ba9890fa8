"""Auth benchmark: log-ins per second with the production argon2id parameters, the liveness probe's p99 while
16 log-ins are in flight (hashing must not block the event loop), token verification in another service
(no call to auth per token), and the cost of session revocation: verifications/s with the revocation check
against without it (same tokens, same process), and how long a revocation takes to be honoured by a verifier
in another process (a raw push, and a real ``/logout`` through auth), p50/p99. Runs a real auth api process
against fresh redis-server and nx-27017 servers.

Raw anchors, interleaved with the log-in rounds: argon2id verify with the service's PasswordHasher
parameters on one thread and on as many threads as the service hashes with (``PASSWORD_HASH_WORKERS``,
default 2). Cost as work grows: log-in latency p99 (one log-in in flight per hashing thread) with 1,000 users
stored, then with 100,000 (seeded in bulk in the repository's ``user_doc`` shape with a precomputed hash;
``--grow-small``, ``--grow-large``, ``--grow-logins``, ``--no-grow``); at default sizes seeding 100k users
takes ~10-20 s on the loaded 2-core machine (extrapolated from 2k users in 0.2 s).

Last line, exactly: ``auth-bench: logins_per_s=<x> live_p99_ms_under_login_load=<ms> revocation_check_cost=<ratio>
revocation_p99_ms=<ms> logins_vs_raw=<x> login_p99_growth_ratio=<x>`` (one line): ``logins_vs_raw`` is
log-ins/s over raw verifications/s on one thread (issue 15's definition: target >= 1.7x with both cores
used; the ratio to raw verification on the service's thread count is in the table);
``login_p99_growth_ratio`` is the p99 with 100k users over the p99 with 1k (target <= 1.2). Medians of
``--rounds`` rounds, each round's figure printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import jwt
from argon2 import PasswordHasher, Type
from redis.asyncio import Redis

from novapulse_auth.constants import ARGON2_MEMORY_KIB, ARGON2_PARALLELISM, ARGON2_TIME_COST
from novapulse_auth.repository import ORGS, USERS, new_id, org_doc, user_doc
from novapulse_auth.settings import AuthSettings
from novapulse_runtime.problems import ProblemError
from novapulse_runtime.revocation import RevocationList, publish_revocations
from novapulse_runtime.tokens import TokenVerifier

from .stack import AuthStack, P, auth_api

PASSWORD = "Bench-Correct-Horse-9"
CONCURRENCY = 16
REVOCATION_SAMPLES = 50  # per kind (raw push, /logout) and round


HASH_WORKERS = int(AuthSettings.model_fields["password_hash_workers"].default)
"""The service's hashing threads (``PASSWORD_HASH_WORKERS``, default 2: one per core of the 2-core target)."""


def _hasher() -> PasswordHasher:
    """The service's PasswordHasher settings (passwords.py, with the settings' defaults)."""
    return PasswordHasher(
        time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM, type=Type.ID
    )


def _raw_argon2_per_s(seconds: float = 3.0, threads: int = 1) -> float:
    """The anchor: argon2id verifications per second, no server around it, on ``threads`` threads
    (argon2-cffi releases the GIL while hashing, as in the service's thread pool)."""
    hasher = _hasher()
    stored = hasher.hash(PASSWORD)
    counts = [0] * threads
    started = time.perf_counter()

    def spin(k: int) -> None:
        while time.perf_counter() - started < seconds:
            hasher.verify(stored, PASSWORD)
            counts[k] += 1

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(spin, range(threads)))
    return sum(counts) / (time.perf_counter() - started)


async def _login(http: aiohttp.ClientSession, email: str) -> str:
    async with http.post(f"{P}/login", json={"email": email, "password": PASSWORD}) as resp:
        body = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"login failed: {resp.status} {body}")
        return str(body["access_token"])


Result = tuple[float, float, float, int, float, "Revocation"]


class Revocation:
    """Figures of the revocation phase of one round."""

    def __init__(self, plain: float, checked: float, push_ms: list[float], logout_ms: list[float]) -> None:
        self.plain, self.checked, self.push_ms, self.logout_ms = plain, checked, push_ms, logout_ms


async def _verify_rate(verifier: TokenVerifier, tokens: list[str]) -> float:
    t0 = time.perf_counter()
    for i, token in enumerate(tokens):
        await verifier.verify(token)
        if i % 50 == 0:  # a server yields between requests; so does this loop (the subscriber needs turns)
            await asyncio.sleep(0)
    return len(tokens) / (time.perf_counter() - t0)


async def _honoured(revocations: RevocationList, sid: str, t0: float) -> float:
    """Milliseconds from ``t0`` until this verifier refuses ``sid`` (polled every 0.2 ms)."""
    while not await revocations.is_revoked(sid):
        if time.perf_counter() - t0 > 10:
            raise RuntimeError("revocation not honoured within 10 s")
        await asyncio.sleep(0.0002)
    return (time.perf_counter() - t0) * 1000


async def _revocation(
    http: aiohttp.ClientSession, url: str, redis_url: str, namespace: str, tokens: list[str]
) -> Revocation:
    """The revocation check's cost per verification, and the time until a revocation is honoured by a
    verifier in another process than the one that made it (here: this one, on its own Redis connection)."""
    jwks = f"{url}{P}/.well-known/jwks.json"
    redis = Redis.from_url(redis_url, decode_responses=True)
    plain = TokenVerifier(jwks, issuer="novapulse-auth", audience="novapulse")
    revocations = RevocationList(redis, namespace)
    checked = TokenVerifier(jwks, issuer="novapulse-auth", audience="novapulse", revocations=revocations)
    writer = Redis.from_url(redis_url, decode_responses=True)
    try:
        kept = tokens[: max(1, len(tokens) - 2 * REVOCATION_SAMPLES)]
        sample = (kept * (2000 // len(kept) + 1))[:2000]  # same cost per verification whether repeated or not
        await plain.verify(sample[0])
        await checked.verify(sample[0])
        deadline = time.monotonic() + 10
        while not revocations.synced:  # the subscription comes up in the background
            if time.monotonic() > deadline:
                raise RuntimeError("revocation subscription did not come up")
            await asyncio.sleep(0.01)
        plain_rates: list[float] = []
        checked_rates: list[float] = []
        for _ in range(5):  # interleaved, so load changes on the machine hit both alike
            plain_rates.append(await _verify_rate(plain, sample))
            checked_rates.append(await _verify_rate(checked, sample))
        rate_plain, rate_checked = statistics.median(plain_rates), statistics.median(checked_rates)
        spare = tokens[len(kept) :]
        sids = [str(jwt.decode(t, options={"verify_signature": False})["sid"]) for t in spare]
        push_ms: list[float] = []
        half = len(sids) // 2
        for sid in sids[:half]:  # the raw push, as auth's announce() sends it
            t0 = time.perf_counter()
            await publish_revocations(writer, namespace, {sid: time.time() + 960})
            push_ms.append(await _honoured(revocations, sid, t0))
        logout_ms: list[float] = []
        for token, sid in list(zip(spare, sids, strict=True))[half:]:  # a real log-out through auth
            t0 = time.perf_counter()
            async with http.post(f"{P}/logout", headers={"Authorization": f"Bearer {token}"}) as resp:
                if resp.status != 204:
                    raise RuntimeError(f"logout failed: {resp.status} {await resp.text()}")
            logout_ms.append(await _honoured(revocations, sid, t0))
        try:
            await checked.verify(spare[-1])
            raise RuntimeError("a logged-out token still verifies")
        except ProblemError:
            pass
        return Revocation(rate_plain, rate_checked, push_ms, logout_ms)
    finally:
        await plain.close()
        await checked.close()
        await redis.aclose()
        await writer.aclose()


async def _run(url: str, users: int, seconds: float, round_no: int, redis_url: str, namespace: str) -> Result:
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=60)) as http:
        emails = [f"bench{i}-r{round_no}-{os.getpid()}@example.com" for i in range(users)]
        for i, email in enumerate(emails):
            body = {"email": email, "password": PASSWORD, "name": f"Bench {i}", "organization": f"Org {i}"}
            async with http.post(f"{P}/register", json=body) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"register failed: {resp.status} {await resp.text()}")
        # Phase 1: probe latency with nothing else running (baseline).
        idle = await _probe(http, 2.0)
        # Phase 2: 16 log-ins in flight for ``seconds`` while the probe is polled.
        stop = asyncio.Event()
        done = 0
        tokens: list[str] = []

        async def client(k: int) -> None:
            nonlocal done
            i = k
            while not stop.is_set():
                tokens.append(await _login(http, emails[i % users]))
                done += 1
                i += CONCURRENCY

        started = time.perf_counter()
        clients = [asyncio.create_task(client(k)) for k in range(CONCURRENCY)]
        await asyncio.sleep(0.5)  # let the pool fill
        loaded = await _probe(http, seconds)
        stop.set()
        await asyncio.gather(*clients)
        elapsed = time.perf_counter() - started
        logins_per_s = done / elapsed
        # Phase 3: another service verifies tokens from the JWKS alone.
        verifier = TokenVerifier(f"{url}{P}/.well-known/jwks.json", issuer="novapulse-auth", audience="novapulse")
        jwks_before = await _jwks_hits(http)
        t0 = time.perf_counter()
        sample = tokens[:2000]
        for token in sample:
            await verifier.verify(token)
        verify_per_s = len(sample) / (time.perf_counter() - t0)
        await verifier.close()
        jwks_calls = await _jwks_hits(http) - jwks_before
        revocation = await _revocation(http, url, redis_url, namespace, tokens)
        return logins_per_s, _p99(idle), _p99(loaded), jwks_calls, verify_per_s, revocation


async def _probe(http: aiohttp.ClientSession, seconds: float) -> list[float]:
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        async with http.get("/api/v1/health/live") as resp:
            await resp.read()
        samples.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.01)
    return samples


async def _jwks_hits(http: aiohttp.ClientSession) -> int:
    async with http.get("/api/v1/metrics") as resp:
        text = await resp.text()
    total = 0
    for line in text.splitlines():
        if line.startswith("novapulse_http_requests_total") and "jwks.json" in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def _p99(samples: list[float]) -> float:
    return _pct(samples, 0.99)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# --- cost as work grows: login latency with 1k vs 100k users stored ---------------------------------------

GROW_IN_FLIGHT = HASH_WORKERS
"""Log-ins in flight while the latency is sampled: one per hashing thread, so the figure is a log-in's own
time (user lookup, argon2id verify, session), not queueing behind the pool."""


async def _seed_users(mongo_url: str, db: str, first: int, count: int, stored_hash: str) -> float:
    """Users ``grow{first}`` .. ``grow{first + count - 1}`` inserted in bulk in the repository's shape
    (:func:`user_doc`, precomputed hash of :data:`PASSWORD`), 1000 per organisation (:func:`org_doc`).
    Returns the seconds it took."""
    from pymongo import AsyncMongoClient

    t0 = time.perf_counter()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
    try:
        users, orgs = client[db][USERS], client[db][ORGS]
        for i in range(first, first + count, 1000):
            org_id = new_id()
            batch = [
                user_doc(
                    email=f"grow{j}@example.com",
                    name=f"Grow {j}",
                    org_id=org_id,
                    role="owner",
                    password_hash=stored_hash,
                )
                for j in range(i, min(first + count, i + 1000))
            ]
            await orgs.insert_one(org_doc(org_id=org_id, name=f"Grow {i}", owner_id=str(batch[0]["_id"])))
            await users.insert_many(batch, ordered=False)
    finally:
        await client.close()
    return time.perf_counter() - t0


async def _login_latencies(url: str, stored: int, logins: int) -> list[float]:
    """Milliseconds per log-in of ``logins`` log-ins (``GROW_IN_FLIGHT`` at a time) of users spread over the
    ``stored`` seeded ones."""
    step = max(1, stored // max(1, logins))
    emails = [f"grow{(k * step + k) % stored}@example.com" for k in range(logins)]
    samples: list[float] = []
    left = iter(emails)
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=60)) as http:
        await _login(http, emails[0])  # warm-up

        async def lane() -> None:
            for email in left:
                t0 = time.perf_counter()
                await _login(http, email)
                samples.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(lane() for _ in range(GROW_IN_FLIGHT)))
    return samples


def _growth(stack: AuthStack, small: int, large: int, logins: int, rounds: int) -> tuple[list[float], list[float]]:
    """Per round, the log-in p99 with ``small`` users stored, then (after seeding up to ``large``) with
    ``large`` users stored; the same log-in count and users of each size's range."""
    stored_hash = _hasher().hash(PASSWORD)
    seeded = asyncio.run(_seed_users(stack.mongo_url, stack.mongo_db, 0, small, stored_hash))
    print(f"# seeded {small:,} users in {seeded:.1f} s", flush=True)
    small_p99 = [_p99(asyncio.run(_login_latencies(stack.url, small, logins))) for _ in range(rounds)]
    seeded = asyncio.run(_seed_users(stack.mongo_url, stack.mongo_db, small, large - small, stored_hash))
    print(f"# seeded {large - small:,} more users in {seeded:.1f} s", flush=True)
    large_p99 = [_p99(asyncio.run(_login_latencies(stack.url, large, logins))) for _ in range(rounds)]
    return small_p99, large_p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the loaded phase")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="repeat and report medians")
    parser.add_argument("--raw-seconds", type=float, default=3.0, help="length of each raw argon2id run")
    parser.add_argument("--grow-small", type=int, default=int(os.environ.get("BENCH_AUTH_GROW_SMALL", 1000)))
    parser.add_argument("--grow-large", type=int, default=int(os.environ.get("BENCH_AUTH_GROW_LARGE", 100_000)))
    parser.add_argument("--grow-logins", type=int, default=int(os.environ.get("BENCH_AUTH_GROW_LOGINS", 300)))
    parser.add_argument("--no-grow", action="store_true", help="skip the 1k vs 100k users part")
    args = parser.parse_args()

    # users are set up directly and log-ins measured: registration by e-mail is off
    raw_1: list[float] = []
    raw_n: list[float] = []
    results = []
    with auth_api("auth-bench-", "auth_bench", email_verification=False) as stack:
        for r in range(args.rounds):  # the raw anchors interleaved with the log-in rounds
            raw_1.append(_raw_argon2_per_s(args.raw_seconds, 1))
            raw_n.append(_raw_argon2_per_s(args.raw_seconds, HASH_WORKERS))
            results.append(asyncio.run(_run(stack.url, args.users, args.seconds, r, stack.redis_url, stack.namespace)))
        grow = None if args.no_grow else _growth(stack, args.grow_small, args.grow_large, args.grow_logins, args.rounds)
    raw = statistics.median(raw_1)
    raw_threads = statistics.median(raw_n)

    logins = statistics.median(r[0] for r in results)
    idle_p99 = statistics.median(r[1] for r in results)
    loaded_p99 = statistics.median(r[2] for r in results)
    jwks_calls = max(r[3] for r in results)
    verify = statistics.median(r[4] for r in results)
    revs = [r[5] for r in results]
    plain = statistics.median(v.plain for v in revs)
    checked = statistics.median(v.checked for v in revs)
    push = [ms for v in revs for ms in v.push_ms]
    logout = [ms for v in revs for ms in v.logout_ms]
    print(f"argon2id m={ARGON2_MEMORY_KIB} KiB t={ARGON2_TIME_COST} p={ARGON2_PARALLELISM}; {os.cpu_count()} CPUs")
    print(f"{'figure':<44}{'median of ' + str(len(results)):>16}")
    print(f"{'raw argon2id verify/s, 1 thread (anchor)':<44}{raw:>16.1f}  runs {' '.join(f'{x:.1f}' for x in raw_1)}")
    label = f"raw argon2id verify/s, {HASH_WORKERS} threads (service)"
    print(f"{label:<44}{raw_threads:>16.1f}  runs {' '.join(f'{x:.1f}' for x in raw_n)}")
    print(f"{'logins/s, 16 in flight':<44}{logins:>16.1f}  runs {' '.join(f'{r[0]:.1f}' for r in results)}")
    print(f"{'logins/s vs raw argon2id (1 thread)':<44}{logins / raw:>15.2f}x")
    print(f"{'logins/s vs raw argon2id (' + str(HASH_WORKERS) + ' threads)':<44}{logins / raw_threads:>15.2f}x")
    print(f"{'/health/live p99 ms, idle':<44}{idle_p99:>16.2f}")
    print(f"{'/health/live p99 ms, 16 logins in flight':<44}{loaded_p99:>16.2f}")
    print(f"{'token verifications/s in another service':<44}{verify:>16.0f}")
    print(f"{'JWKS fetches for those verifications':<44}{jwks_calls:>16d}")
    print(f"{'verifications/s without revocation check':<44}{plain:>16.0f}")
    print(f"{'verifications/s with revocation check':<44}{checked:>16.0f}")
    print(f"{'with check vs without':<44}{checked / plain:>15.2f}x")
    n = len(push)
    print(
        f"{'push -> honoured ms, p50 / p99 (n=' + str(n) + ')':<44}{_pct(push, 0.5):>7.2f} / {_pct(push, 0.99):>6.2f}"
    )
    n = len(logout)
    label = "/logout sent -> honoured ms, p50 / p99 (n=" + str(n) + ")"
    print(f"{label:<44}{_pct(logout, 0.5):>7.2f} / {_pct(logout, 0.99):>6.2f}")
    growth = "n/a"
    if grow is not None:
        small_p99, large_p99 = grow
        sp, lp = statistics.median(small_p99), statistics.median(large_p99)
        growth = f"{lp / sp:.2f}"
        for n_users, vals, med in ((args.grow_small, small_p99, sp), (args.grow_large, large_p99, lp)):
            label = f"login p99 ms, {n_users:,} users stored"
            print(f"{label:<44}{med:>16.2f}  runs {' '.join(f'{x:.1f}' for x in vals)}")
        print(
            f"  ({args.grow_logins} log-ins per run, {GROW_IN_FLIGHT} in flight, users spread over those stored;"
            f" target: login_p99_growth_ratio <= 1.2)"
        )
    print(
        f"auth-bench: logins_per_s={logins:.1f} live_p99_ms_under_login_load={loaded_p99:.2f}"
        f" revocation_check_cost={checked / plain:.2f} revocation_p99_ms={_pct(logout, 0.99):.2f}"
        f" logins_vs_raw={logins / raw:.2f} login_p99_growth_ratio={growth}"
    )


if __name__ == "__main__":
    main()
