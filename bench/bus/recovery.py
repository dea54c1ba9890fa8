"""Recovery benchmark (4): 4 consumer processes, kill -9 of one holding in-flight work, 1% poison events.

``python -m bench.bus.recovery worker <redis_url> <name>`` is the novapulse consumer child; the Node BullMQ
child is ``bench/node/recovery.mjs``. Both follow one protocol: ``HSET bench:started <seq> <worker>`` when a
handler starts, 20 ms of work, ``RPUSH bench:handled <seq>`` when done; every 100th event is poison (raises).

Measured: lost (good events never handled), duplicates (handled more than once), recovery_s (from the kill
until every good event the victim had started but not finished was handled by another worker), deliveries
before dead letter (poison events).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "bench" / "node"
CLAIM_IDLE = 2.0
HANDLER_TIMEOUT = 1.0
MAX_DELIVERIES = 3


async def worker(url: str, name: str) -> None:
    from bench.bus.common import TYPE, BenchPayload, bus, runtime
    from novapulse_runtime.bus import Event

    rt = runtime(url, 16)
    b = bus(rt, tracing=True)
    consumer = b.consumer(
        "rec",
        sources=["bench"],
        name=name,
        concurrency=16,
        handler_timeout=HANDLER_TIMEOUT,
        claim_idle=CLAIM_IDLE,
        max_deliveries=MAX_DELIVERIES,
        backoff_base=0.05,
        backoff_max=0.2,
        block_ms=200,
    )

    @consumer.on(TYPE)
    async def handle(event: Event) -> None:
        data = event.data_as(BenchPayload)
        if data.seq % 100 == 99:
            raise RuntimeError("poison")
        await rt.redis.hset("bench:started", str(data.seq), name)
        await asyncio.sleep(0.02)
        await rt.redis.rpush("bench:handled", str(data.seq))

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(consumer.run(stop))
    print('{"ready": true}', flush=True)
    await task
    await rt.close()


async def measure(
    url: str,
    n: int,
    start: Callable[[str], subprocess.Popen[str]],
    load: Callable[[], Awaitable[None]],
    dead_deliveries: Callable[[Redis], Awaitable[list[int]]],
) -> dict[str, Any]:
    r = Redis.from_url(url, decode_responses=True)
    await r.flushall()
    procs = [start(f"c{k}") for k in range(4)]
    try:
        for p in procs:
            assert p.stdout is not None
            p.stdout.readline()
        await load()
        poison = {j for j in range(n) if j % 100 == 99}
        good = n - len(poison)
        deadline = time.monotonic() + 120
        while int(await r.llen("bench:handled")) < good // 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        procs[0].kill()
        killed = time.monotonic()
        procs[0].wait()
        started = await r.hgetall("bench:started")
        done_at_kill = {int(x) for x in await r.lrange("bench:handled", 0, -1)}
        inflight = {int(s) for s, w in started.items() if w == "c0"} - done_at_kill
        recovery = None
        deadline = killed + 120
        while time.monotonic() < deadline:
            handled_now = {int(x) for x in await r.lrange("bench:handled", 0, -1)}
            if recovery is None and inflight <= handled_now:
                recovery = time.monotonic() - killed
            dead = await dead_deliveries(r)
            if recovery is not None and len(handled_now) >= good and len(dead) >= len(poison):
                break
            await asyncio.sleep(0.02)
        handled = [int(x) for x in await r.lrange("bench:handled", 0, -1)]
        dead = await dead_deliveries(r)
        distinct = set(handled)
        return {
            "events": n,
            "poison": len(poison),
            "victim_in_flight_at_kill": len(inflight),
            "lost": good - len(distinct - poison),
            "duplicates": len(handled) - len(distinct),
            "dead_letters": len(dead),
            "deliveries_before_dead_letter": sorted(set(dead)),
            "recovery_s": recovery,
        }
    finally:
        for p in procs[1:]:
            p.terminate()
        for p in procs[1:]:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        await r.flushall()
        await r.aclose()


async def novapulse_recovery(url: str, n: int) -> dict[str, Any]:
    from bench.bus.common import TYPE, bus, payload, runtime

    def start(name: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "bench.bus.recovery", "worker", url, name]
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    async def load() -> None:
        rt = runtime(url)
        b = bus(rt, tracing=False)
        b.publisher.maxlen = n * 10
        for i in range(0, n, 1000):
            await b.publish_events([b.event(TYPE, payload(j)) for j in range(i, min(n, i + 1000))])
        await rt.close()

    async def dead(r: Redis) -> list[int]:
        entries: list[Any] = await r.xrange("bench:dead:rec", count=100_000) or []
        return [int(f.get("dead_deliveries", 0)) for _, f in entries]

    out = await measure(url, n, start, load, dead)
    out["threshold_s"] = f"claim_idle {CLAIM_IDLE}"
    return out


async def bullmq_recovery(url: str, n: int) -> dict[str, Any]:
    def start(name: str) -> subprocess.Popen[str]:
        cmd = ["node", "recovery.mjs", "worker", url, name]
        env = {"BENCH_LOCK_MS": str(int(CLAIM_IDLE * 1000)), "PATH": _path()}
        return subprocess.Popen(
            cmd, cwd=NODE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )

    async def load() -> None:
        proc = await asyncio.create_subprocess_exec(
            "node", "recovery.mjs", "load", url, str(n), cwd=NODE_DIR, stdout=asyncio.subprocess.DEVNULL
        )
        await proc.wait()

    async def dead(r: Redis) -> list[int]:
        ids: list[Any] = await r.zrange("bull:recq:failed", 0, -1)
        out = []
        for jid in ids:
            job = await r.hgetall(f"bull:recq:{jid!s}")
            with contextlib.suppress(ValueError):
                out.append(int(job.get("atm") or job.get("attemptsMade") or 0))
        return out

    out = await measure(url, n, start, load, dead)
    out["threshold_s"] = f"lockDuration {CLAIM_IDLE}, stalledInterval {CLAIM_IDLE / 2}"
    return out


def _path() -> str:
    import os

    return os.environ.get("PATH", "")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        asyncio.run(worker(sys.argv[2], sys.argv[3]))
    else:
        sys.exit("usage: python -m bench.bus.recovery worker <redis_url> <name>")
