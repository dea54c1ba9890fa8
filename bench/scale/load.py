"""The mixed load of the scale benchmark, sent to the gateway only.

Virtual clients (closed loop, ``concurrency`` of them) each pick, by weight (:data:`WEIGHTS`), one of:
a registration (``POST /auth/register``, a new address: argon2id hash), a log-in of a seeded user
(``POST /auth/login``: argon2id verify), an endpoint change (create an endpoint filtered to a type no event
has, change it, delete it: three requests), or an application event (``POST /webhooks/events`` to the
seeded organisation's endpoint at the receiver, ``data.seq`` naming it). Every answer is recorded by route;
an event answered 2xx is *accepted* and must reach the receiver.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp

PASSWORD = "Bench-Correct-Horse-9"
EVENT_TYPE = "bench.event"
UNUSED_TYPE = "bench.unused"
WEIGHTS = {"register": 1, "login": 2, "endpoint": 1, "event": 6}
"""Relative frequency of each operation a virtual client picks (an endpoint change is three requests)."""
CPU_ROUTES = ("POST /auth/register", "POST /auth/login")
"""Routes whose cost is argon2id (hash on registration, verify on log-in)."""
REQUEST_TIMEOUT = 60.0
AUTH = "/api/v1/auth"
HOOKS = "/api/v1/webhooks"


@dataclass
class Seed:
    """A user set up before the load: its token and its organisation's endpoint at the receiver."""

    email: str
    token: str


@dataclass
class Recorder:
    started: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    per_second: Counter[int] = field(default_factory=Counter)
    accepted: set[str] = field(default_factory=set)
    failures: Counter[str] = field(default_factory=Counter)
    """A sample of what the errors were (route, status, detail), to print."""

    def add(self, route: str, status: int, started: float, detail: str = "") -> None:
        now = time.perf_counter()
        self.latencies[route].append((now - started) * 1000)
        self.statuses[route][status] += 1
        if 200 <= status < 300:
            self.per_second[int(now - self.started)] += 1
        elif status != 429:
            self.failures[f"{route} -> {status} {detail[:120]}"] += 1


async def _call(
    http: aiohttp.ClientSession, rec: Recorder, route: str, method: str, url: str, body: Any, token: str = ""
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    t0 = time.perf_counter()
    try:
        async with http.request(method, url, json=body, headers=headers) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        rec.add(route, 0, t0, repr(exc))
        return 0, None
    data: Any = None
    if raw and resp.content_type.endswith("json"):
        try:
            data = await resp.json(content_type=None)
        except ValueError:
            data = None
    rec.add(route, status, t0, "" if 200 <= status < 300 else raw.decode(errors="replace"))
    return status, data


async def _register(http: aiohttp.ClientSession, rec: Recorder, gateway: str, email: str) -> int:
    body = {"email": email, "password": PASSWORD, "name": "Bench", "organization": f"Org {email[:12]}"}
    status, _ = await _call(http, rec, "POST /auth/register", "POST", f"{gateway}{AUTH}/register", body)
    return status


async def _login(http: aiohttp.ClientSession, rec: Recorder, gateway: str, email: str) -> str | None:
    body = {"email": email, "password": PASSWORD}
    status, data = await _call(http, rec, "POST /auth/login", "POST", f"{gateway}{AUTH}/login", body)
    return str(data["access_token"]) if status == 200 and isinstance(data, dict) else None


async def _endpoint_change(http: aiohttp.ClientSession, rec: Recorder, gateway: str, seed: Seed, target: str) -> None:
    url = f"{gateway}{HOOKS}/endpoints"
    body = {"url": target, "event_types": [UNUSED_TYPE], "description": "bench"}
    status, data = await _call(http, rec, "POST /webhooks/endpoints", "POST", url, body, seed.token)
    if status != 201 or not isinstance(data, dict):
        return
    one = f"{url}/{data['id']}"
    await _call(http, rec, "PATCH /webhooks/endpoints/{id}", "PATCH", one, {"description": "changed"}, seed.token)
    await _call(http, rec, "DELETE /webhooks/endpoints/{id}", "DELETE", one, None, seed.token)


async def _event(http: aiohttp.ClientSession, rec: Recorder, gateway: str, seed: Seed, seq: str) -> None:
    body = {"type": EVENT_TYPE, "data": {"seq": seq}}
    status, data = await _call(http, rec, "POST /webhooks/events", "POST", f"{gateway}{HOOKS}/events", body, seed.token)
    if 200 <= status < 300:
        rec.accepted.add(seq)
        if not isinstance(data, dict) or data.get("messages") != 1:  # the seeded endpoint alone subscribes
            rec.failures[f"POST /webhooks/events -> {status} but messages={data!r}"] += 1


def session(concurrency: int) -> aiohttp.ClientSession:
    """One keep-alive connection pool to the gateway (as a load balancer in front of it would hold)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency + 4),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
    )


async def seed_users(http: aiohttp.ClientSession, gateway: str, receiver: str, count: int) -> list[Seed]:
    """``count`` users (each the owner of its own organisation) with one endpoint at the receiver for
    :data:`EVENT_TYPE`, logged in. Raises ``RuntimeError`` when any step fails (nothing can be measured)."""
    rec = Recorder(time.perf_counter())
    run = uuid.uuid4().hex[:8]

    async def one(i: int) -> Seed:
        email = f"seed{i}-{run}@example.com"
        if await _register(http, rec, gateway, email) != 201:
            raise RuntimeError(f"seed registration failed: {dict(rec.failures)}")
        token = await _login(http, rec, gateway, email)
        if token is None:
            raise RuntimeError(f"seed log-in failed: {dict(rec.failures)}")
        body = {"url": f"{receiver}/hook/{i}", "event_types": [EVENT_TYPE], "description": "bench target"}
        status, _ = await _call(http, rec, "seed", "POST", f"{gateway}{HOOKS}/endpoints", body, token)
        if status != 201:
            raise RuntimeError(f"seed endpoint failed: {dict(rec.failures)}")
        return Seed(email, token)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def run_load(
    http: aiohttp.ClientSession, gateway: str, receiver: str, seeds: list[Seed], seconds: float, concurrency: int
) -> tuple[Recorder, float]:
    """``concurrency`` virtual clients for ``seconds``; each finishes the operation it is in. Returns the
    recorder and the elapsed seconds (until the last client stopped)."""
    rec = Recorder(time.perf_counter())
    ops, weights = list(WEIGHTS), list(WEIGHTS.values())
    run = uuid.uuid4().hex[:8]
    deadline = rec.started + seconds

    async def client(k: int) -> None:
        rng = random.Random(k)  # a reproducible mix, not a secret
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            op = rng.choices(ops, weights)[0]
            seed = seeds[rng.randrange(len(seeds))]
            if op == "register":
                await _register(http, rec, gateway, f"u{k}-{n}-{run}@example.com")
            elif op == "login":
                await _login(http, rec, gateway, seed.email)
            elif op == "endpoint":
                await _endpoint_change(http, rec, gateway, seed, f"{receiver}/other")
            else:
                await _event(http, rec, gateway, seed, f"{run}-{k}-{n}")

    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return rec, time.perf_counter() - rec.started


async def drain(http: aiohttp.ClientSession, receiver: str, accepted: set[str], timeout: float) -> tuple[int, float]:
    """Poll the receiver until every accepted event arrived or ``timeout`` seconds passed: (lost, seconds
    waited)."""
    t0 = time.perf_counter()
    while True:
        async with http.get(f"{receiver}/seen") as resp:
            seen = set((await resp.json())["seqs"])
        missing = len(accepted - seen)
        waited = time.perf_counter() - t0
        if not missing or waited > timeout:
            return missing, waited
        await asyncio.sleep(0.25)
