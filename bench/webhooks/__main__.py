"""Webhook benchmark: ``python -m bench.webhooks`` (``make bench-webhooks``).

Starts its own Redis and MongoDB-wire server, a receiver in a separate process and the real worker process,
then measures, side by side on the same servers:

1. signed deliveries/s through the whole pipeline (stream → fan-out → sign → POST → logs) to a fast
   receiver, against a raw aiohttp POST loop at the same concurrency (8 endpoints x 4 = 32);
2. stream-to-first-attempt latency (p50/p99) at 500 events/s;
3. the healthy endpoints' p99 when 10% of the endpoints hang until the timeout.

The last line printed is ``webhook-bench: deliveries_vs_raw=<x> p99_ms_at_500=<ms> healthy_p99_rise_pct=<pct>``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.fernet import Fernet
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from novapulse_devkit.servers import free_port, mongo_server, port_open, redis_server
from novapulse_runtime import jsonstrict
from novapulse_runtime.bus.envelope import build, encode
from novapulse_runtime.secretbox import SecretBox
from novapulse_webhook.constants import ENDPOINT_CACHE_TTL
from novapulse_webhook.models import EndpointIn
from novapulse_webhook.repository import Repository
from novapulse_webhook.service import WebhookService
from novapulse_webhook.settings import WebhookSettings

EVENT_TYPE = "user.password_changed"
THROUGHPUT_EVENTS = 2000
THROUGHPUT_ENDPOINTS = 8
ENDPOINT_CONCURRENCY = 4
RATE = 500
RATE_SECONDS = 6.0
LATENCY_ENDPOINTS = 10
ROUNDS = 3
LATENCY_PAIRS = 2
HANG_TIMEOUT = "2"
# BENCH_PROFILE=<file> runs the worker under cProfile (to find where its time goes).
PROFILE = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []


# --- the receiver (its own process, so it does not share a core's event loop with what is measured) ------


def _receiver(port: int) -> None:
    arrivals: list[tuple[str, float, float]] = []

    async def hook(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        if name.startswith("hang"):
            await asyncio.sleep(3600)
        now = time.time()
        sent = now
        if body[:1] == b"{":
            stamp = jsonstrict.loads(body).get("timestamp")
            if isinstance(stamp, str):
                sent = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        arrivals.append((name, now, now - sent))
        return web.Response(status=200)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(arrivals)

    async def reset(_: web.Request) -> web.Response:
        arrivals.clear()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{name}", hook)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


async def _arrivals(http: aiohttp.ClientSession, base: str) -> list[tuple[str, float, float]]:
    async with http.get(f"{base}/stats") as resp:
        return [tuple(a) for a in await resp.json()]


async def _wait_count(http: aiohttp.ClientSession, base: str, count: int, prefix: str, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = [a for a in await _arrivals(http, base) if a[0].startswith(prefix)]
        if len(got) >= count or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


# --- measurements ----------------------------------------------------------------------------------------


async def _raw_loop(http: aiohttp.ClientSession, url: str, body: bytes, total: int, concurrency: int) -> float:
    left = total

    async def one() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


async def _publish(redis: Redis, stream: str, orgs: Sequence[str], total: int, rate: float | None) -> None:
    """``total`` events round-robin over ``orgs``; paced to ``rate`` per second when given."""
    batch = 10 if rate else 200
    started = time.perf_counter()
    sent = 0
    while sent < total:
        pipe = redis.pipeline(transaction=False)
        for i in range(min(batch, total - sent)):
            org = orgs[(sent + i) % len(orgs)]
            event = build(EVENT_TYPE, {"user_id": "u", "org_id": org}, source="auth", org_id=org)
            pipe.xadd(stream, encode(event))  # type: ignore[arg-type]
        await pipe.execute()
        sent += batch
        if rate:
            ahead = sent / rate - (time.perf_counter() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)


def _start_worker(env: dict[str, str], log_path: Path, recv_port: int) -> subprocess.Popen[bytes]:
    deadline = time.monotonic() + 30
    while not port_open(recv_port) and time.monotonic() < deadline:
        time.sleep(0.1)
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, *PROFILE, "-m", "novapulse_webhook", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    while not port_open(int(env["WORKER_HTTP_PORT"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    return worker


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_bench() -> str:
    tmp = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    redis_port, mongo_port, recv_port = free_port(), free_port(), free_port()
    servers = [redis_server(redis_port, tmp / "redis").start(), mongo_server(mongo_port, tmp / "mongo").start()]
    receiver = multiprocessing.get_context("spawn").Process(target=_receiver, args=(recv_port,), daemon=True)
    receiver.start()
    worker: subprocess.Popen[bytes] | None = None
    namespace = "bench" + uuid.uuid4().hex[:8]
    key = Fernet.generate_key().decode()
    env = dict(os.environ)
    env.update(
        {
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "MONGO_URL": f"mongodb://127.0.0.1:{mongo_port}",
            "MONGO_DB": "bench_webhook",
            "EVENTS_NAMESPACE": namespace,
            "WEBHOOK_SECRET_KEYS": key,
            "WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
            "WEBHOOK_ALLOW_HTTP": "true",
            "WEBHOOK_TIMEOUT": HANG_TIMEOUT,
            "WEBHOOK_LEASE": "10",
            "QUEUE_CONCURRENCY": "64",
            "LOG_LEVEL": "WARNING",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(free_port()),
        }
    )
    env["WORKER_HTTP_PORT"] = str(free_port())
    base = f"http://127.0.0.1:{recv_port}"
    settings = WebhookSettings(
        redis_url=env["REDIS_URL"],
        mongo_url=env["MONGO_URL"],
        mongo_db="bench_webhook",
        webhook_secret_keys=key,
        webhook_allowed_cidrs=env["WEBHOOK_ALLOWED_CIDRS"],  # type: ignore[arg-type]
        webhook_allow_http=True,
    )
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(env["MONGO_URL"], tz_aware=True)
    redis = Redis.from_url(env["REDIS_URL"], decode_responses=True)
    stream = f"{namespace}:events:auth"
    try:
        repo = Repository(mongo["bench_webhook"])
        await repo.ensure_indexes()
        svc = WebhookService(repo, settings, SecretBox([key]))
        hanging_id = ""
        rounds_t = [f"t{r}-{i}" for r in range(ROUNDS) for i in range(THROUGHPUT_ENDPOINTS)]
        for org in rounds_t:
            await svc.create_endpoint(org, EndpointIn(url=f"{base}/{org}", concurrency=ENDPOINT_CONCURRENCY))
        for i in range(LATENCY_ENDPOINTS):
            await svc.create_endpoint(f"b{i}", EndpointIn(url=f"{base}/b{i}", concurrency=ENDPOINT_CONCURRENCY))
            path = "hang" if i == 0 else f"c{i}"
            made = await svc.create_endpoint(
                f"c{i}", EndpointIn(url=f"{base}/{path}", concurrency=ENDPOINT_CONCURRENCY)
            )
            if i == 0:
                hanging_id = made.id
        worker = await asyncio.to_thread(_start_worker, env, tmp / "worker.log", recv_port)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            # Warm-up: every endpoint cache and connection pool once.
            await _publish(redis, stream, [f"b{i}" for i in range(LATENCY_ENDPOINTS)], 50, None)
            await _wait_count(http, base, 50, "b", 30)
            body = jsonstrict.dumps(
                {"type": EVENT_TYPE, "timestamp": datetime.now().astimezone().isoformat(), "data": {"user_id": "u"}}
            ).encode()
            conc = THROUGHPUT_ENDPOINTS * ENDPOINT_CONCURRENCY
            pipeline_rates, raw_rates = [], []
            for r in range(ROUNDS):
                raw_rates.append(await _raw_loop(http, f"{base}/raw", body, THROUGHPUT_EVENTS, conc))
                async with http.post(f"{base}/reset"):
                    pass
                orgs = [f"t{r}-{i}" for i in range(THROUGHPUT_ENDPOINTS)]
                started = time.time()
                await _publish(redis, stream, orgs, THROUGHPUT_EVENTS, None)
                got = await _wait_count(http, base, THROUGHPUT_EVENTS, f"t{r}-", 180)
                last = max(a[1] for a in got)
                pipeline_rates.append(len(got) / (last - started))
            pipeline, raw = statistics.median(pipeline_rates), statistics.median(raw_rates)
            print(f"webhook-bench: deliveries/s pipeline={pipeline:.0f} raw_aiohttp={raw:.0f} (medians of {ROUNDS})")

            async def latency_run(prefix: str, healthy: int) -> list[float]:
                async with http.post(f"{base}/reset"):
                    pass
                orgs = [f"{prefix}{i}" for i in range(LATENCY_ENDPOINTS)]
                total = int(RATE * RATE_SECONDS)
                await _publish(redis, stream, orgs, total, RATE)
                expected = total * healthy // LATENCY_ENDPOINTS
                got = await _wait_count(http, base, expected, prefix, 60)
                return [a[2] * 1000 for a in got]

            base_runs: list[list[float]] = []
            hang_runs: list[list[float]] = []
            for _ in range(LATENCY_PAIRS):
                base_runs.append(await latency_run("b", LATENCY_ENDPOINTS))
                await repo.endpoints.update_one({"_id": hanging_id}, {"$set": {"enabled": True}})
                await asyncio.sleep(ENDPOINT_CACHE_TTL + 0.5)  # let the worker's endpoint cache see it
                hang_runs.append(await latency_run("c", LATENCY_ENDPOINTS - 1))
                # Disable the hanging endpoint so its backlog drains before the next baseline run.
                await repo.endpoints.update_one({"_id": hanging_id}, {"$set": {"enabled": False}})
                await asyncio.sleep(ENDPOINT_CACHE_TTL + float(HANG_TIMEOUT) + 0.5)
        base_lat = [x for run in base_runs for x in run]
        hang_lat = [x for run in hang_runs for x in run]
        p50 = statistics.median(_pct(r, 0.5) for r in base_runs)
        p99 = statistics.median(_pct(r, 0.99) for r in base_runs)
        hp99 = statistics.median(_pct(r, 0.99) for r in hang_runs)
        rise = (hp99 - p99) / p99 * 100 if p99 > 0 else float("nan")
        print(
            f"webhook-bench: stream-to-first-attempt at {RATE} events/s "
            f"p50={p50:.1f}ms p99={p99:.1f}ms n={len(base_lat)}"
        )
        print(
            f"webhook-bench: healthy p99 with 1 of {LATENCY_ENDPOINTS} endpoints hanging {hp99:.1f}ms "
            f"(vs {p99:.1f}ms) n={len(hang_lat)} (medians of {LATENCY_PAIRS} alternating runs)"
        )
        return (
            f"webhook-bench: deliveries_vs_raw={pipeline / raw:.2f} p99_ms_at_500={p99:.1f} "
            f"healthy_p99_rise_pct={rise:.1f}"
        )
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        receiver.kill()
        receiver.join(5)
        await redis.aclose()
        await mongo.close()
        for server in servers:
            server.stop()


def main() -> None:
    print(asyncio.run(run_bench()), flush=True)


if __name__ == "__main__":
    main()
