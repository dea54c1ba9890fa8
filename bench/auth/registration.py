"""Registration timing: ``POST /register`` for new and for registered addresses must take the same time (no
account enumeration by timing). A real auth api process (production argon2id parameters, e-mail verification
on) on fresh redis-server and nx-27017; requests of both kinds interleaved, one at a time.

``python -m bench.auth.registration [--n 50]``. Last line, exactly:
``register-bench: new_median_ms=<x> known_median_ms=<y> median_ratio=<y/x> p90_ratio=<r>``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

import aiohttp
from pymongo import MongoClient

from .stack import P, auth_api

PASSWORD = "Bench-Correct-Horse-9"


def _p90(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


async def _run(url: str, mongo_url: str, db: str, n: int) -> tuple[list[float], list[float]]:
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=60)) as http:
        known = [f"known{i}-{os.getpid()}@example.com" for i in range(n)]
        for email in known:  # set up: registered through the verification link
            body = {"email": email, "password": PASSWORD, "name": "Known", "organization": "K"}
            async with http.post(f"{P}/register", json=body) as resp:
                assert resp.status == 202, await resp.text()
        mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
        try:
            records = mongo[db]["outbox"].find({"type": "registration.verification_requested"})
            tokens = [json.loads(r["fields"]["data"])["token"] for r in records]
        finally:
            mongo.close()
        for token in tokens:
            async with http.post(f"{P}/register/verify", json={"token": token, "password": PASSWORD}) as resp:
                assert resp.status == 201, await resp.text()

        async def timed(email: str) -> float:
            body = {"email": email, "password": PASSWORD, "name": "Anyone", "organization": "O"}
            t0 = time.perf_counter()
            async with http.post(f"{P}/register", json=body) as resp:
                await resp.read()
                assert resp.status == 202
            return (time.perf_counter() - t0) * 1000

        for i in range(3):  # warm-up
            await timed(f"warm{i}-{os.getpid()}@example.com")
        new_ms, known_ms = [], []
        for i in range(n):  # interleaved: load from elsewhere hits both alike
            new_ms.append(await timed(f"new{i}-{os.getpid()}@example.com"))
            known_ms.append(await timed(known[i]))
        return new_ms, known_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50, help="registrations of each kind")
    args = parser.parse_args()
    with auth_api("auth-register-bench-", "auth_register_bench", email_verification=True) as stack:
        new_ms, known_ms = asyncio.run(_run(stack.url, stack.mongo_url, stack.mongo_db, args.n))
    new_med, known_med = statistics.median(new_ms), statistics.median(known_ms)
    print(f"{'POST /register, ' + str(args.n) + ' each':<36}{'median ms':>12}{'p90 ms':>12}")
    print(f"{'new address':<36}{new_med:>12.1f}{_p90(new_ms):>12.1f}")
    print(f"{'registered address':<36}{known_med:>12.1f}{_p90(known_ms):>12.1f}")
    print(
        f"register-bench: new_median_ms={new_med:.1f} known_median_ms={known_med:.1f} "
        f"median_ratio={known_med / new_med:.2f} p90_ratio={_p90(known_ms) / _p90(new_ms):.2f}"
    )


if __name__ == "__main__":
    main()
