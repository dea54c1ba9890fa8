"""Auth benchmark: log-ins per second with the production argon2id parameters, the liveness probe's p99 while
16 log-ins are in flight (hashing must not block the event loop), and token verification in another service
(no call to auth per token). Runs a real auth api process against fresh redis-server and nx-27017 servers.

Last line, exactly: ``auth-bench: logins_per_s=<x> live_p99_ms_under_login_load=<ms>``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from argon2 import PasswordHasher, Type
from cryptography.fernet import Fernet

from novapulse_runtime.devservers import free_port, mongo_server, port_open, redis_server
from novapulse_runtime.tokens import TokenVerifier

from ..constants import ARGON2_MEMORY_KIB, ARGON2_PARALLELISM, ARGON2_TIME_COST

P = "/api/v1/auth"
PASSWORD = "Bench-Correct-Horse-9"
CONCURRENCY = 16


def _raw_argon2_per_s(seconds: float = 3.0) -> float:
    """The anchor: argon2id verifications per second on one thread, no server around it."""
    hasher = PasswordHasher(
        time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM, type=Type.ID
    )
    stored = hasher.hash(PASSWORD)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        hasher.verify(stored, PASSWORD)
        n += 1
    return n / (time.perf_counter() - started)


async def _login(http: aiohttp.ClientSession, email: str) -> str:
    async with http.post(f"{P}/login", json={"email": email, "password": PASSWORD}) as resp:
        body = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"login failed: {resp.status} {body}")
        return str(body["access_token"])


async def _run(url: str, users: int, seconds: float, round_no: int) -> tuple[float, float, float, int, float]:
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
        return logins_per_s, _p99(idle), _p99(loaded), jwks_calls, verify_per_s


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
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the loaded phase")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="repeat and report medians")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="auth-bench-") as tmp:
        run = Path(tmp)
        redis = redis_server(free_port(), run / "redis").start()
        mongo = mongo_server(free_port(), run / "mongo").start()
        port = free_port()
        env = dict(os.environ)
        env.update(
            {
                "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
                "MONGO_URL": f"mongodb://127.0.0.1:{mongo.port}",
                "MONGO_DB": "auth_bench",
                "HTTP_HOST": "127.0.0.1",
                "HTTP_PORT": str(port),
                "AUTH_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
                "AUTH_JWKS_URL": f"http://127.0.0.1:{port}{P}/.well-known/jwks.json",
                "EVENTS_NAMESPACE": f"bench{os.getpid()}",
                "RATE_LIMIT_ENABLED": "false",
                "REGISTRATION_EMAIL_VERIFICATION": "false",  # users are set up directly; log-ins are measured
                "LOG_LEVEL": "WARNING",
            }
        )
        log = open(run / "auth.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([sys.executable, "-m", "novapulse_auth", "api"], env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while not port_open(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"auth did not start:\n{(run / 'auth.log').read_text()}")
                time.sleep(0.05)
            raw = _raw_argon2_per_s()
            results = [
                asyncio.run(_run(f"http://127.0.0.1:{port}", args.users, args.seconds, r)) for r in range(args.rounds)
            ]
        finally:
            proc.terminate()
            proc.wait(20)
            log.close()
            mongo.stop()
            redis.stop()

    logins = statistics.median(r[0] for r in results)
    idle_p99 = statistics.median(r[1] for r in results)
    loaded_p99 = statistics.median(r[2] for r in results)
    jwks_calls = max(r[3] for r in results)
    verify = statistics.median(r[4] for r in results)
    print(f"argon2id m={ARGON2_MEMORY_KIB} KiB t={ARGON2_TIME_COST} p={ARGON2_PARALLELISM}; {os.cpu_count()} CPUs")
    print(f"{'figure':<44}{'median of ' + str(len(results)):>16}")
    print(f"{'raw argon2id verify/s, 1 thread (anchor)':<44}{raw:>16.1f}")
    print(f"{'logins/s, 16 in flight':<44}{logins:>16.1f}")
    print(f"{'logins/s vs raw argon2id (1 thread)':<44}{logins / raw:>15.2f}x")
    print(f"{'/health/live p99 ms, idle':<44}{idle_p99:>16.2f}")
    print(f"{'/health/live p99 ms, 16 logins in flight':<44}{loaded_p99:>16.2f}")
    print(f"{'token verifications/s in another service':<44}{verify:>16.0f}")
    print(f"{'JWKS fetches for those verifications':<44}{jwks_calls:>16d}")
    print(f"auth-bench: logins_per_s={logins:.1f} live_p99_ms_under_login_load={loaded_p99:.2f}")


if __name__ == "__main__":
    main()
