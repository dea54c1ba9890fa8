"""Webhook benchmark: ``python -m bench.webhooks`` (``make bench-webhooks``).

Starts its own Redis and MongoDB-wire server, a receiver in a separate process (receiver.py) and the real
worker process, then measures, side by side on the same servers:

1. signed deliveries/s through the whole pipeline (stream → fan-out → sign → POST → logs) to a fast
   receiver, against a raw aiohttp POST loop at the same concurrency (8 endpoints x 4 = 32);
2. the storage ceiling: the pipeline's own writes per delivered message (pre-claimed message insert,
   ``inflight`` start record, attempt log insert, finishing message update) through the service's own
   group-commit writer (``BatchWriter``: its lanes, batch sizes and delays), 500 deliveries in flight, no
   HTTP, against the same MongoDB-wire server (``BENCH_WEBHOOK_CEILING_N`` deliveries, default 10,000). Each
   delivery waits the throughput runs' median attempt round trip (their attempt log's ``duration_ms``)
   between its start record and its result, as the worker does, so the writer drops exactly as many start
   records unwritten as it would in the pipeline (the share is printed);
3. stream-to-first-attempt latency (p50/p99) at 500 events/s;
4. the healthy endpoints' p99 when 10% of the endpoints hang until the timeout;
5. scaling: the deliveries of 1 with 1 worker process, then with a second worker process in the same group
   (interleaved rounds; the second process is started before, and stopped after, each of its runs);
6. cost as work grows: deliveries/s in an organisation with 10 endpoints vs one with 1,000 endpoints
   (``BENCH_WEBHOOK_GROW_ENDPOINTS``) and 100,000 delivered messages (+ one attempt each) already stored
   (``BENCH_WEBHOOK_GROW_STORED``), seeded directly in the service's document shapes; each event fans out to
   every endpoint of its organisation, ~2,000 deliveries per run (``BENCH_WEBHOOK_GROW_N``).

The throughput and ceiling parts also print CPU time per delivery (``/proc/<pid>/stat``): the worker
process and nx-27017 in the pipeline, the benchmark process (the writer) and nx-27017 in the ceiling.

Medians of ``BENCH_ROUNDS`` rounds (default 3), every round's figure printed. Other knobs:
``BENCH_WEBHOOK_N`` (deliveries per throughput run, default 2,000), ``BENCH_WEBHOOK_RATE_S`` (seconds per
latency run, default 6), ``BENCH_WEBHOOK_ONLY`` (parts among ``ceiling scale grow``; throughput and latency
always run). Time at default sizes (extrapolated from small runs on the loaded 2-core machine): ceiling
~1 min, scale ~30 s, grow ~1.5-2 min (seeding 100k messages and their attempts: 36 s here).

The last line printed is ``webhook-bench: deliveries_vs_raw=<x> p99_ms_at_500=<ms> healthy_p99_rise_pct=<pct>
deliveries_vs_storage_ceiling=<pipeline/ceiling> deliveries_growth_ratio=<large/small>
worker_scale_2x=<2 processes/1>`` (``nan`` for a part not run).
"""

from __future__ import annotations

import asyncio
import copy
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
from cryptography.fernet import Fernet
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from bench.webhooks.receiver import _receiver
from novapulse_devkit.servers import cpu_seconds, free_port, mongo_server, port_open, redis_server
from novapulse_runtime import jsonstrict
from novapulse_runtime.bus.envelope import build, encode
from novapulse_runtime.secretbox import SecretBox
from novapulse_webhook.constants import ENDPOINT_CACHE_TTL, ENDPOINT_ID_PREFIX, MessageStatus, Outcome
from novapulse_webhook.domain import new_id, redact
from novapulse_webhook.fanout import payload_body
from novapulse_webhook.models import EndpointIn
from novapulse_webhook.repository import (
    Repository,
    attempt_doc,
    attempt_insert,
    finish_op,
    message_doc,
    message_insert,
    start_op,
)
from novapulse_webhook.service import WebhookService
from novapulse_webhook.settings import WebhookSettings
from novapulse_webhook.writer import BatchWriter

EVENT_TYPE = "user.password_changed"
THROUGHPUT_EVENTS = int(os.environ.get("BENCH_WEBHOOK_N", 2000))
THROUGHPUT_ENDPOINTS = 8
ENDPOINT_CONCURRENCY = 4
RATE = 500
RATE_SECONDS = float(os.environ.get("BENCH_WEBHOOK_RATE_S", 6.0))
LATENCY_ENDPOINTS = 10
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
CEILING_N = int(os.environ.get("BENCH_WEBHOOK_CEILING_N", 10_000))
CEILING_IN_FLIGHT = 500
"""Deliveries in flight in the storage ceiling: enough for the writer to fill its batches (``WRITE_BATCH_SIZE``)."""
GROW_N = int(os.environ.get("BENCH_WEBHOOK_GROW_N", 2000))
GROW_SMALL_ENDPOINTS = 10
GROW_LARGE_ENDPOINTS = int(os.environ.get("BENCH_WEBHOOK_GROW_ENDPOINTS", 1000))
GROW_STORED = int(os.environ.get("BENCH_WEBHOOK_GROW_STORED", 100_000))
PARTS = os.environ.get("BENCH_WEBHOOK_ONLY", "ceiling scale grow").split()
"""Optional parts to run (``BENCH_WEBHOOK_ONLY``, space-separated); throughput and latency always run."""
LATENCY_PAIRS = 2
HANG_TIMEOUT = "2"
# BENCH_PROFILE=<file> runs the worker under cProfile (to find where its time goes).
PROFILE = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []


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


# --- storage ceiling: the pipeline's own writes per delivery, no HTTP ------------------------------------


async def storage_ceiling(
    repo: Repository, total: int, in_flight: int, attempt_s: float, nx_pid: int
) -> tuple[float, float, float, float]:
    """Deliveries/s of the writes one delivered message costs on the fast path (intake.py, attempt.py,
    recorder.py), through the service's own group-commit writer (writer.py: its lanes, batch sizes and
    delays): the pre-claimed message insert (awaited, as fan-out does), the ``inflight`` start record, then,
    ``attempt_s`` seconds later (the attempt's round trip), the attempt log insert and the finishing message
    update (not awaited, as in the worker; all durable before the clock stops). A start record the result
    overtakes in the writer is dropped there, as in the worker. No HTTP, no signing, no Redis: only the
    database and the writer. Returns (deliveries/s, share of start records dropped, CPU µs per delivery of
    this process, of nx-27017 ``nx_pid``)."""
    writer = BatchWriter(repo)
    stop = asyncio.Event()
    runner = asyncio.create_task(writer.run(stop))
    now_dt = datetime.now().astimezone()
    body = payload_body(EVENT_TYPE, {"user_id": "u", "org_id": "ceiling"}, now_dt)
    headers = redact(
        {
            "content-type": "application/json",
            "user-agent": "NovaPulse-Webhooks/1",
            "webhook-id": "msg_x",
            "webhook-timestamp": "1700000000",
            "webhook-signature": "v1," + "A" * 44,
        }
    )
    left = total
    pending: list[asyncio.Future[bool]] = []

    async def lane() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            now = datetime.now().astimezone()
            claim = uuid.uuid4().hex
            doc = message_doc(
                org_id="ceiling",
                endpoint_id="ep_ceiling",
                event_id=uuid.uuid4().hex,
                event_type=EVENT_TYPE,
                body=body,
                now=now,
                claim=claim,
                lease_until=now,
            )
            await writer.put(message_insert(doc))
            pending.append(writer.put(start_op(doc["_id"], claim, 1, now, "http://127.0.0.1/ceiling")))
            await asyncio.sleep(attempt_s)
            pending.append(
                writer.put(
                    attempt_insert(
                        attempt_doc(
                            message_id=doc["_id"],
                            org_id="ceiling",
                            endpoint_id="ep_ceiling",
                            attempt=1,
                            started_at=now,
                            url="http://127.0.0.1/ceiling",
                            request_headers=headers,
                            status=200,
                            response_body="",
                            duration_ms=1.0,
                            error=None,
                            outcome=Outcome.SUCCESS,
                        )
                    )
                )
            )
            pending.append(
                writer.put(
                    finish_op(
                        doc["_id"],
                        claim,
                        status=MessageStatus.SUCCEEDED,
                        next_attempt_at=None,
                        last_status=200,
                        last_error=None,
                        now=now,
                        attempts=1,
                    )
                )
            )

    started, cpu0, nx0 = time.perf_counter(), time.process_time(), cpu_seconds(nx_pid)
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - started
    cpu, nx = time.process_time() - cpu0, cpu_seconds(nx_pid) - nx0
    stop.set()
    await runner
    return total / elapsed, writer.superseded / total, cpu / total * 1e6, nx / total * 1e6


# --- cost as work grows: endpoints and stored messages seeded in the service's document shapes -----------


async def seed_org(svc: WebhookService, repo: Repository, org: str, base: str, count: int) -> None:
    """``count`` endpoints in ``org`` (URL path ``/<org>-<i>``): the first through the service, the others
    inserted directly as copies of its document (new ids and URLs; the service's own per-organisation limit,
    ``WEBHOOK_MAX_ENDPOINTS_PER_ORG``, default 100, applies to the API, not to stored data)."""
    made = await svc.create_endpoint(org, EndpointIn(url=f"{base}/{org}-0", concurrency=ENDPOINT_CONCURRENCY))
    first = await repo.endpoints.find_one({"_id": made.id})
    assert first is not None
    docs = []
    for i in range(1, count):
        doc = copy.deepcopy(first)
        doc["_id"] = new_id(ENDPOINT_ID_PREFIX)
        doc["url"] = f"{base}/{org}-{i}"
        docs.append(doc)
    for i in range(0, len(docs), 1000):
        await repo.endpoints.insert_many(docs[i : i + 1000])


async def seed_messages(repo: Repository, org: str, count: int) -> float:
    """``count`` delivered messages (status ``succeeded``, one attempt each in the log) of ``org``'s
    endpoints, inserted with ``insert_many`` in the service's shapes (:func:`message_doc`,
    :func:`attempt_doc`). Returns the seconds it took."""
    t0 = time.perf_counter()
    eps = [e["_id"] for e in await repo.endpoints.find({"org_id": org}, {"_id": 1}).to_list()]
    now = datetime.now().astimezone()
    body = payload_body(EVENT_TYPE, {"user_id": "u", "org_id": org}, now)
    for i in range(0, count, 2000):
        msgs, atts = [], []
        for j in range(i, min(count, i + 2000)):
            ep = eps[j % len(eps)]
            doc = message_doc(
                org_id=org, endpoint_id=ep, event_id=f"seed{j}", event_type=EVENT_TYPE, body=body, now=now
            )
            doc.update(status=MessageStatus.SUCCEEDED, next_attempt_at=None, attempts=1, last_status=200)
            msgs.append(doc)
            atts.append(
                attempt_doc(
                    message_id=doc["_id"],
                    org_id=org,
                    endpoint_id=ep,
                    attempt=1,
                    started_at=now,
                    url="http://127.0.0.1/seed",
                    request_headers={},
                    status=200,
                    response_body="",
                    duration_ms=1.0,
                    error=None,
                    outcome=Outcome.SUCCESS,
                )
            )
        await repo.messages.insert_many(msgs, ordered=False)
        await repo.attempts.insert_many(atts, ordered=False)
    return time.perf_counter() - t0


def _fmt_runs(values: Sequence[float]) -> str:
    return " ".join(f"{v:,.0f}" for v in values)


async def run_bench() -> str:
    tmp = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    redis_port, mongo_port, recv_port = free_port(), free_port(), free_port()
    servers = [redis_server(redis_port, tmp / "redis").start(), mongo_server(mongo_port, tmp / "mongo").start()]
    nx_pid = int((tmp / "mongo" / f"nx-{mongo_port}.pid").read_text().strip())
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
        webhook_allowed_cidrs=env["WEBHOOK_ALLOWED_CIDRS"],
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
        rounds_t = [
            f"{p}{r}-{i}" for p in ("t", "s1r", "s2r") for r in range(ROUNDS) for i in range(THROUGHPUT_ENDPOINTS)
        ]
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

            async def deliveries(prefix: str, orgs: Sequence[str], events: int, expected: int) -> float:
                """Publish ``events`` round-robin over ``orgs``; deliveries/s until ``expected`` arrived at
                endpoints whose path starts with ``prefix``."""
                async with http.post(f"{base}/reset"):
                    pass
                started = time.time()
                await _publish(redis, stream, orgs, events, None)
                got = await _wait_count(http, base, expected, prefix, 300)
                if len(got) < expected:
                    raise RuntimeError(f"{prefix}: {len(got)} of {expected} deliveries arrived")
                last = max(a[1] for a in got)
                return float(len(got) / (last - started))

            pipeline_rates, raw_rates, worker_cpu, nx_cpu = [], [], [], []
            for r in range(ROUNDS):
                raw_rates.append(await _raw_loop(http, f"{base}/raw", body, THROUGHPUT_EVENTS, conc))
                orgs = [f"t{r}-{i}" for i in range(THROUGHPUT_ENDPOINTS)]
                w0, n0 = cpu_seconds(worker.pid), cpu_seconds(nx_pid)
                pipeline_rates.append(await deliveries(f"t{r}-", orgs, THROUGHPUT_EVENTS, THROUGHPUT_EVENTS))
                worker_cpu.append((cpu_seconds(worker.pid) - w0) / THROUGHPUT_EVENTS * 1e6)
                nx_cpu.append((cpu_seconds(nx_pid) - n0) / THROUGHPUT_EVENTS * 1e6)
            pipeline, raw = statistics.median(pipeline_rates), statistics.median(raw_rates)
            print(f"webhook-bench: deliveries/s pipeline={pipeline:.0f} raw_aiohttp={raw:.0f} (medians of {ROUNDS})")
            print(f"webhook-bench:   runs pipeline {_fmt_runs(pipeline_rates)}; raw {_fmt_runs(raw_rates)}", flush=True)
            print(
                f"webhook-bench:   CPU per delivery (until the last one arrived): worker "
                f"{statistics.median(worker_cpu):.0f} µs (runs {_fmt_runs(worker_cpu)}), nx-27017 "
                f"{statistics.median(nx_cpu):.0f} µs (runs {_fmt_runs(nx_cpu)})",
                flush=True,
            )
            durations = [
                a["duration_ms"]
                for a in await repo.attempts.find(
                    {"org_id": {"$in": [o for o in rounds_t if o.startswith("t")]}}, {"duration_ms": 1}
                ).to_list()
                if a.get("duration_ms") is not None
            ]
            attempt_s = statistics.median(durations) / 1000 if durations else 0.0
            ceiling = float("nan")
            if "ceiling" in PARTS:
                ceiling_rates, dropped, own_cpu, ceiling_nx = [], [], [], []
                for _ in range(ROUNDS):
                    rate, share, own, nx = await storage_ceiling(repo, CEILING_N, CEILING_IN_FLIGHT, attempt_s, nx_pid)
                    ceiling_rates.append(rate)
                    dropped.append(share)
                    own_cpu.append(own)
                    ceiling_nx.append(nx)
                ceiling = statistics.median(ceiling_rates)
                print(
                    f"webhook-bench:   ceiling: attempt round trip {attempt_s * 1000:.1f} ms (median of the "
                    f"throughput runs' attempts), start records dropped {statistics.median(dropped):.0%}; CPU per "
                    f"delivery: writer {statistics.median(own_cpu):.0f} µs, nx-27017 "
                    f"{statistics.median(ceiling_nx):.0f} µs (runs {_fmt_runs(ceiling_nx)})",
                    flush=True,
                )
                print(
                    f"webhook-bench: storage ceiling (the pipeline's writes per delivery through its group-commit "
                    f"writer, no HTTP, {CEILING_IN_FLIGHT} in flight, {CEILING_N} deliveries) "
                    f"deliveries/s={ceiling:.0f} (median of {ROUNDS}; runs {_fmt_runs(ceiling_rates)}); "
                    f"pipeline/ceiling={pipeline / ceiling:.2f}",
                    flush=True,
                )

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
            scale_2x = grow_ratio = float("nan")
            if "scale" in PARTS or "grow" in PARTS:
                if "scale" in PARTS:
                    one_rates: list[float] = []
                    two_rates: list[float] = []
                    for r in range(ROUNDS):  # interleaved: 1 process, then a second one joins, per round
                        orgs = [f"s1r{r}-{i}" for i in range(THROUGHPUT_ENDPOINTS)]
                        one_rates.append(await deliveries(f"s1r{r}-", orgs, THROUGHPUT_EVENTS, THROUGHPUT_EVENTS))
                        env2 = dict(env, HTTP_PORT=str(free_port()), WORKER_HTTP_PORT=str(free_port()))
                        worker2 = await asyncio.to_thread(_start_worker, env2, tmp / f"worker2-{r}.log", recv_port)
                        try:
                            orgs = [f"s2r{r}-{i}" for i in range(THROUGHPUT_ENDPOINTS)]
                            two_rates.append(await deliveries(f"s2r{r}-", orgs, THROUGHPUT_EVENTS, THROUGHPUT_EVENTS))
                        finally:
                            worker2.terminate()
                            try:
                                worker2.wait(20)
                            except subprocess.TimeoutExpired:
                                worker2.kill()
                    one, two = statistics.median(one_rates), statistics.median(two_rates)
                    scale_2x = two / one
                    print(
                        f"webhook-bench: worker processes 1: {one:.0f}/s (runs {_fmt_runs(one_rates)}), "
                        f"2: {two:.0f}/s (runs {_fmt_runs(two_rates)}); {THROUGHPUT_EVENTS} deliveries, "
                        f"{THROUGHPUT_ENDPOINTS} endpoints x {ENDPOINT_CONCURRENCY}, {os.cpu_count()} CPUs "
                        f"(interleaved rounds: a second worker process, started before its run, joins the same group)",
                        flush=True,
                    )
                if "grow" in PARTS:
                    t_seed = time.perf_counter()
                    await seed_org(svc, repo, "gsmall", base, GROW_SMALL_ENDPOINTS)
                    await seed_org(svc, repo, "glarge", base, GROW_LARGE_ENDPOINTS)
                    seeded_s = await seed_messages(repo, "glarge", GROW_STORED)
                    print(
                        f"webhook-bench: grow: seeded {GROW_LARGE_ENDPOINTS} endpoints and {GROW_STORED:,} "
                        f"delivered messages (+ their attempts) in {time.perf_counter() - t_seed:.1f} s "
                        f"(messages {seeded_s:.1f} s)",
                        flush=True,
                    )
                    await asyncio.sleep(ENDPOINT_CACHE_TTL + 0.5)  # the worker's endpoint cache sees them
                    cases = (("gsmall", GROW_SMALL_ENDPOINTS), ("glarge", GROW_LARGE_ENDPOINTS))
                    for org, count in cases:  # warm-up: each org's endpoint list and connections once
                        await deliveries(f"{org}-", [org], 1, count)
                    grow_rates: dict[str, list[float]] = {org: [] for org, _ in cases}
                    for _ in range(ROUNDS):
                        for org, count in cases:
                            events = max(1, GROW_N // count)
                            grow_rates[org].append(await deliveries(f"{org}-", [org], events, events * count))
                    small, large = (statistics.median(grow_rates[org]) for org, _ in cases)
                    grow_ratio = large / small
                    print(
                        f"webhook-bench: grow: deliveries/s with {GROW_SMALL_ENDPOINTS} endpoints in the org "
                        f"{small:.0f} (runs {_fmt_runs(grow_rates['gsmall'])}), with {GROW_LARGE_ENDPOINTS} "
                        f"endpoints and {GROW_STORED:,} messages stored {large:.0f} "
                        f"(runs {_fmt_runs(grow_rates['glarge'])}); ~{GROW_N} deliveries per run, "
                        f"fan-out of each event to every endpoint of the org",
                        flush=True,
                    )
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
            f"healthy_p99_rise_pct={rise:.1f} deliveries_vs_storage_ceiling={pipeline / ceiling:.2f} "
            f"deliveries_growth_ratio={grow_ratio:.2f} worker_scale_2x={scale_2x:.2f}"
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
