"""Workflow benchmark: ``python -m bench.workflow`` (``make bench-workflow``).

Starts its own Redis and MongoDB-wire server and the real workflow worker process, then measures:

1. throughput of a 3-step no-op workflow (three ``condition`` steps), steps/s, one worker process, against
   DBOS Transact (PyPI ``dbos``) running the same workflow on the PostgreSQL server at 127.0.0.1:5432
   (``DBOS_DATABASE_URL`` to change it), one process;
2. trigger → first-step latency (p50/p99) at 50 runs/s (``user.registered`` events on the auth stream);
3. delay accuracy: fired - due of 1 s delays (p99);
4. recovery after kill -9 of the worker mid-run: runs lost, effects duplicated (a run whose ``emit`` went out
   under two different event ids: consumers could not drop the copy), the copies re-sent under the *same*
   id (at-least-once relay; every consumer group drops them), seconds from the restart until every run
   completed.

The last line printed is
``workflow-bench: steps_per_s=<x> vs_dbos=<x> p99_start_ms=<ms> timer_p99_ms=<ms> lost=<n> duplicated=<n>``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from novapulse_workflow.language import Definition
from novapulse_workflow.repository import Repository
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from novapulse_devkit.servers import free_port, mongo_server, port_open, redis_server
from novapulse_runtime.bus import EventBus
from novapulse_runtime.catalog.auth import UserRegistered
from novapulse_runtime.clock import now_ms
from novapulse_runtime.documents import by_index, count
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings

THROUGHPUT_RUNS = int(os.environ.get("BENCH_RUNS", "600"))
RATE = 50
RATE_SECONDS = 4.0
TIMER_RUNS = 100
RECOVERY_RUNS = 200
DBOS_URL = os.environ.get("DBOS_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/wfbench_dbos")
ORG = "bench-org"
# BENCH_PROFILE=<file> runs the (first) worker under cProfile (to find where its time goes).
PROFILE = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []

NOOP3 = {
    "name": "noop3",
    "trigger": {"type": "manual"},
    "steps": [
        {"key": f"s{i}", "type": "condition", "branches": [{"when": "`false`", "next": "end"}]} for i in range(3)
    ],
}
ON_REGISTER = {
    "name": "on-register",
    "trigger": {"type": "user.registered"},
    "steps": [{"key": "first", "type": "condition", "branches": [{"when": "`false`", "next": "end"}]}],
}
TIMER = {
    "name": "timer",
    "trigger": {"type": "manual"},
    "steps": [{"key": "wait", "type": "delay", "seconds": 1}],
}
RECOVERY = {
    "name": "recovery",
    "trigger": {"type": "manual"},
    "steps": [
        {"key": "pause", "type": "delay", "seconds": 1.5},
        {"key": "tell", "type": "emit", "event_type": "bench.told", "data": {"n": "${trigger.data.n}"}},
    ],
}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis_port, self.mongo_port = free_port(), free_port()
        self.servers = [
            redis_server(self.redis_port, tmp / "redis").start(),
            mongo_server(self.mongo_port, tmp / "mongo").start(),
        ]
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.mongo_url = f"mongodb://127.0.0.1:{self.mongo_port}/"
        self.namespace = "bench" + uuid.uuid4().hex[:8]
        self.db = "wfbench_" + uuid.uuid4().hex[:8]
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.mongo_url, tz_aware=True)
        self.repo = Repository(self.client[self.db])
        self.worker: subprocess.Popen[bytes] | None = None
        self.same_id_copies = 0

    def start_worker(self) -> subprocess.Popen[bytes]:
        port = free_port()
        env = dict(os.environ) | {
            "REDIS_URL": self.redis_url,
            "MONGO_URL": self.mongo_url,
            "MONGO_DB": self.db,
            "EVENTS_NAMESPACE": self.namespace,
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(port),
            "WORKER_HTTP_PORT": str(port),
            "POLL_INTERVAL_SECONDS": "0.02",
            "RUN_LEASE_SECONDS": "2",
            "RUN_SLOTS": "32",
            "RUN_SLOTS_PER_ORG": "32",
            "LOG_LEVEL": "WARNING",
        }
        log = open(self.tmp / "worker.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            [sys.executable, *PROFILE, "-m", "novapulse_workflow", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker did not start: " + (self.tmp / "worker.log").read_text()[-2000:])
            time.sleep(0.05)
        self.worker = proc
        return proc

    async def define(self, body: dict[str, Any]) -> tuple[str, Definition]:
        defn = Definition.model_validate(body)
        record = await self.repo.insert_definition(
            ORG, "bench", defn.model_dump(mode="json", exclude_none=True), defn.trigger.type
        )
        return record.id, defn

    async def insert_held(self, def_id: str, defn: Definition, n: int) -> list[str]:
        ids = []
        for i in range(n):
            run = await self.repo.insert_run(
                ORG, def_id, 1, {"id": f"{def_id}-{i}", "data": {"n": i}}, defn.steps[0].key, [], held=True
            )
            assert run is not None
            ids.append(run.id)
        return ids

    async def release(self, def_id: str) -> None:
        await self.repo.runs.update_many({"definition_id": def_id}, {"$set": {"due_ms": now_ms()}})

    async def completed(self, def_id: str) -> int:
        # the count command with $eq (served by the status index), not count_documents: nx-27017 answers that
        # by reading the whole collection, which would load the server being measured (docs/architecture.md)
        return await count(self.repo.runs, by_index({"status": "completed", "definition_id": def_id}))

    async def until_completed(self, def_id: str, n: int, timeout: float) -> bool:
        """Poll every 0.5 s (one indexed count a poll, cheap for the server being measured)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.completed(def_id) >= n:
                return True
            await asyncio.sleep(0.5)
        return False

    async def last_finished_ms(self, def_id: str) -> int:
        doc = await self.repo.runs.find_one({"definition_id": def_id}, sort=[("finished_ms", -1)])
        return int(doc["finished_ms"]) if doc else 0

    # 1 ---------------------------------------------------------------------------------------------------
    async def throughput(self) -> float:
        def_id, defn = await self.define(NOOP3)
        await self.insert_held(def_id, defn, THROUGHPUT_RUNS)
        started = now_ms()
        await self.release(def_id)
        if not await self.until_completed(def_id, THROUGHPUT_RUNS, 300):
            raise RuntimeError("throughput runs did not complete")
        return 3 * THROUGHPUT_RUNS / ((await self.last_finished_ms(def_id) - started) / 1000)

    # 2 ---------------------------------------------------------------------------------------------------
    async def start_latency(self) -> tuple[float, float]:
        def_id, _ = await self.define(ON_REGISTER)
        rt = Runtime(ServiceSettings(service_name="auth", redis_url=self.redis_url, mongo_url=self.mongo_url), "api")
        n = int(RATE * RATE_SECONDS)
        try:
            bus = EventBus(rt, namespace=self.namespace, tracing=False)
            begin = time.perf_counter()
            for i in range(n):
                data = UserRegistered(
                    user_id=f"u{i}", org_id=ORG, email=f"u{i}@example.com", name="U", role="owner", organization="B"
                )
                await bus.publish("user.registered", data, org_id=ORG)
                delay = begin + (i + 1) / RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            await rt.close()
        if not await self.until_completed(def_id, n, 60):
            raise RuntimeError("triggered runs did not complete")
        latencies = []
        async for run in self.repo.runs.find({"definition_id": def_id}):
            first = await self.repo.journal.find_one({"_id": f"{run['_id']}:{0:06d}"})
            if first is None:
                continue
            sent = datetime.fromisoformat(run["trigger"]["time"]).timestamp() * 1000
            latencies.append(first["started_ms"] - sent)
        return pct(latencies, 0.5), pct(latencies, 0.99)

    # 3 ---------------------------------------------------------------------------------------------------
    async def timer_accuracy(self) -> float:
        def_id, defn = await self.define(TIMER)
        await self.insert_held(def_id, defn, TIMER_RUNS)
        await self.release(def_id)
        if not await self.until_completed(def_id, TIMER_RUNS, 60):
            raise RuntimeError("timer runs did not complete")
        lateness = [
            float(d["output"]["fired_ms"] - d["output"]["due_ms"])
            async for d in self.repo.journal.find({"key": "wait", "status": "completed"})
        ]
        return pct(lateness, 0.99)

    # 4 ---------------------------------------------------------------------------------------------------
    async def recovery(self) -> tuple[int, int, float]:
        def_id, defn = await self.define(RECOVERY)
        await self.insert_held(def_id, defn, RECOVERY_RUNS)
        await self.release(def_id)
        # kill once the first runs have emitted: some done, some in their delay, some mid-claim
        deadline = time.monotonic() + 30
        while await self.completed(def_id) < RECOVERY_RUNS // 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert self.worker is not None
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(10)
        restarted = now_ms()
        self.start_worker()
        await self.until_completed(def_id, RECOVERY_RUNS, 60)
        resume = (await self.last_finished_ms(def_id) - restarted) / 1000
        lost = RECOVERY_RUNS - await self.completed(def_id)
        await asyncio.sleep(2.0)  # let the relay drain the outbox
        redis = Redis.from_url(self.redis_url, decode_responses=True)
        try:
            entries: list[tuple[str, dict[str, str]]] = await redis.xrange(f"{self.namespace}:events:workflow")  # type: ignore[assignment]
        finally:
            await redis.aclose()
        emitted = [f for _, f in entries if f["type"] == "workflow.emitted"]
        copies = Counter(f["id"] for f in emitted)
        self.same_id_copies = sum(c - 1 for c in copies.values() if c > 1)
        ids_per_run = Counter(json.loads(f["data"])["run_id"] for f in {f["id"]: f for f in emitted}.values())
        duplicated = sum(c - 1 for c in ids_per_run.values() if c > 1)
        return lost, duplicated, resume

    async def close(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(15)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        await self.client.close()
        for server in self.servers:
            server.stop()


def dbos_steps_per_s(runs: int) -> float | None:
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.workflow.dbos_side", str(runs), DBOS_URL],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"DBOS side failed: {exc}", file=sys.stderr)
        return None
    line = [x for x in out.splitlines() if x.startswith("steps_per_s=")][-1]
    return float(line.split("=", 1)[1])


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="workflow-bench-"))
    bench = Bench(tmp)
    try:
        await bench.repo.ensure_indexes()
        bench.start_worker()
        steps = await bench.throughput()
        print(f"(1) NovaPulse workflow: {steps:.0f} steps/s ({THROUGHPUT_RUNS} runs x 3 no-op steps, one worker)")
        p50, p99 = await bench.start_latency()
        print(f"(2) trigger -> first step at {RATE} runs/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms")
        timer_p99 = await bench.timer_accuracy()
        print(f"(3) delay accuracy (fired - due), {TIMER_RUNS} x 1 s: p99 {timer_p99:.0f} ms")
        lost, duplicated, resume = await bench.recovery()
        print(
            f"(4) kill -9 mid-run ({RECOVERY_RUNS} runs): lost {lost}, duplicated {duplicated} (runs whose emit"
            f" went out under two ids), {bench.same_id_copies} re-sent under the same id (dropped by consumers),"
            f" resumed in {resume:.1f} s"
        )
    finally:
        await bench.close()
    dbos = dbos_steps_per_s(THROUGHPUT_RUNS)
    vs = steps / dbos if dbos else float("nan")
    print(f"(1) DBOS Transact on PostgreSQL: {dbos or float('nan'):.0f} steps/s (same workflow, one process)")
    print(
        f"workflow-bench: steps_per_s={steps:.0f} vs_dbos={vs:.2f} p99_start_ms={p99:.0f} "
        f"timer_p99_ms={timer_p99:.0f} lost={lost} duplicated={duplicated}"
    )


if __name__ == "__main__":
    asyncio.run(main())
