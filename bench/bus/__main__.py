"""Bus benchmarks: ``python -m bench.bus`` (``make bench-bus``).

Starts a fresh ``redis-server`` on a free port, installs its anchors (the ``bench`` dependency group with uv,
npm ``bullmq`` in bench/node), then runs, side by side on that server:

1. produce: one at a time, 64 in flight, batches of 100 (bus vs raw redis-py, FastStream, Python and Node BullMQ;
   also the prebuilt envelopes through the publisher's own XADD packing, ``streams.add_batch``)
2. drain: preloaded events, one worker process, concurrency 100, no-op handler (CPU s per 10k, peak RSS)
3. open-loop latency from publish to handler start at 1k and 5k events/s (bus vs Node BullMQ), and for the bus
   its split: publish -> XADD ran and XADD ran -> handler start (Redis's clock from the entry id, whole ms)
4. recovery: 4 consumer processes, kill -9 of one holding in-flight work, 1% poison events

5. cost as work grows: the drain of 2 with the stream already holding ``--grow-entries`` (default 1M) valid
   envelopes owned by 10 other consumer groups (each at a different position, 1000 entries pending each; the
   drain group starts at the end), vs a fresh stream, interleaved rounds on the same server (databases 0/1)
6. horizontal scaling: 1, 2 and 4 worker processes of one consumer group share ``--scale-n`` preloaded events
   (``bench.bus.worker ... share``); the orchestrator times from its ``go`` line to the first ``XINFO GROUPS``
   poll showing no lag and nothing pending, and checks distinct ids across processes = n

Every run checks that each event was handled exactly once (distinct count and pending entries). ``--only``
picks parts (drain produce latency recovery grow scale). The last line is the summary line. Sizes:
``--produce-n``, ``--drain-n`` (also the size of the grow drain), ``--latency-seconds``, ``--recovery-n``,
``--grow-entries``, ``--scale-n``, ``--rounds`` (or the ``BENCH_*`` environment variables).

Summary line ``bus-bench:`` fields, in order: ``drain_vs_bullmq``, ``drain_vs_faststream``,
``produce_batch_vs_raw``, ``p99_ms_at_5k``, ``lost``, ``recovery_s``, ``drain_traced_vs_bullmq``,
``drain_prod_traced_vs_bullmq``, ``worker_rss_mb``, then ``drain_growth_ratio`` (median drain rate with the
large stream / with a fresh stream; target >= 0.8), ``scale_2x`` and ``scale_4x`` (median rate with 2 and 4
processes / with 1). Medians of ``--rounds`` rounds; each table shows every round's figure (the spread).

Time at default sizes (measured at small sizes, extrapolated, loaded 2-core machine): grow ~1 min (1M-entry
preload 5-20 s, about 0.35 GB in Redis), scale ~1.5-2 min.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "bench" / "node"
STREAM = "bench:events:bench"


def log(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- anchors


def install_anchors() -> dict[str, str]:
    """Install the Python anchors (uv group ``bench``) and npm bullmq; returns why an anchor is missing."""
    missing: dict[str, str] = {}
    try:
        importlib.import_module("bullmq")
        importlib.import_module("faststream.redis")
    except ImportError:
        uv = ROOT / ".tools" / "bin" / "uv"
        cmd = [str(uv) if uv.exists() else "uv", "sync", "--all-packages", "--group", "bench", "--inexact"]
        log("installing the bench dependency group: " + " ".join(cmd))
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        importlib.invalidate_caches()
        if proc.returncode != 0:
            log(proc.stderr[-2000:])
    for mod, name in (("bullmq", "bullmq-py"), ("faststream.redis", "faststream")):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            missing[name] = f"not installed ({exc})"
    npm = shutil.which("npm")
    node = shutil.which("node")
    if not (npm and node):
        missing["bullmq-node"] = "node/npm not on PATH"
    elif not (NODE_DIR / "node_modules" / "bullmq").exists():
        log("npm install in bench/node")
        proc = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            missing["bullmq-node"] = "npm install failed: " + proc.stderr[-300:]
    return missing


# ---------------------------------------------------------------------------------------------- helpers


def worker_cmd(kind: str, mode: str, url: str, n: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.bus.worker", kind, mode, url, str(n), *extra]


def run_json(cmd: list[str], timeout: float = 600, cwd: Path = ROOT) -> dict[str, Any]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{") and '"ready"' not in ln]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd[:5])} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def preload_stream(r: Redis, n: int, with_envelope: bool = True) -> None:
    from bench.bus.common import TYPE, bus, payload, runtime

    if with_envelope:
        rt = runtime(str(r.connection_pool.connection_kwargs.get("host", "")) and _url(r))
        b = bus(rt, tracing=False)
        b.publisher.maxlen = n * 10
        for i in range(0, n, 1000):
            await b.publish_events([b.event(TYPE, payload(j)) for j in range(i, min(n, i + 1000))])
        await rt.close()


def _url(r: Redis) -> str:
    kw = r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/0"


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{x:,.{digits}f}"


# ---------------------------------------------------------------------------------------------- 1. produce

PACKED = "raw XADD, hand-packed (add_batch)"
"""Prebuilt envelopes written by ``streams.add_batch`` (the publisher's packing): the produce ceiling of our own
write path, to tell the envelope's cost from the write's."""


async def bench_produce(url: str, n: int, missing: dict[str, str]) -> dict[str, dict[str, float | str]]:
    from bench.bus.common import TYPE, bus, payload, runtime

    r = Redis.from_url(url, decode_responses=True)
    results: dict[str, dict[str, float | str]] = {}

    async def timed(fn: Callable[[], Awaitable[None]], check: Callable[[], Awaitable[int]]) -> float | str:
        await r.flushall()
        t0 = time.perf_counter()
        await fn()
        elapsed = time.perf_counter() - t0
        stored = await check()
        if stored != n:
            return f"stored {stored} != {n}"
        return n / elapsed

    async def xlen() -> int:
        return int(await r.xlen(STREAM)) if await r.exists(STREAM) else 0

    async def lanes(k: int, one: Callable[[int], Awaitable[Any]]) -> None:
        counter = iter(range(n))

        async def lane() -> None:
            for i in counter:
                await one(i)

        await asyncio.gather(*(lane() for _ in range(k)))

    # novapulse bus (tracing on: the default)
    for label, tracing in (("novapulse", True), ("novapulse (tracing off)", False)):
        rt = runtime(url)
        b = bus(rt, tracing=tracing)
        b.publisher.maxlen = n * 10

        async def pub_one(i: int, b: Any = b) -> None:
            await b.publish(TYPE, payload(i))

        async def pub_seq(pub_one: Callable[[int], Awaitable[None]] = pub_one) -> None:
            for i in range(n):
                await pub_one(i)

        async def pub_batch(b: Any = b) -> None:
            for i in range(0, n, 100):
                await b.publish_events([b.event(TYPE, payload(j)) for j in range(i, min(n, i + 100))])

        results[label] = {
            "one": await timed(pub_seq, xlen),
            "inflight64": await timed(functools.partial(lanes, 64, pub_one), xlen),
            "batch100": await timed(pub_batch, xlen),
        }
        await rt.close()

    # raw redis-py XADD of the same envelope fields
    from bench.bus.common import bus as make_bus

    rt = runtime(url)
    encoder = make_bus(rt, tracing=False)

    # the ceiling: the same envelopes, encoded before the clock starts
    prebuilt = [encoder.event(TYPE, payload(i)).to_fields() for i in range(n)]

    def fields(i: int) -> dict[str, str]:
        return prebuilt[i]

    async def raw_one(i: int) -> None:
        await r.xadd(STREAM, fields(i))  # type: ignore[arg-type]

    async def raw_seq() -> None:
        for i in range(n):
            await raw_one(i)

    async def raw_batch() -> None:
        for i in range(0, n, 100):
            async with r.pipeline(transaction=False) as pipe:
                for j in range(i, min(n, i + 100)):
                    pipe.xadd(STREAM, fields(j))  # type: ignore[arg-type]
                await pipe.execute()

    results["raw redis-py XADD"] = {
        "one": await timed(raw_seq, xlen),
        "inflight64": await timed(lambda: lanes(64, raw_one), xlen),
        "batch100": await timed(raw_batch, xlen),
    }

    # the same prebuilt envelopes through the publisher's own XADD packing: our floor without the envelope work
    from novapulse_runtime.bus.streams import add_batch

    async def packed_one(i: int) -> None:
        await add_batch(r, STREAM, [fields(i)])

    async def packed_seq() -> None:
        for i in range(n):
            await packed_one(i)

    async def packed_batch() -> None:
        for i in range(0, n, 100):
            await add_batch(r, STREAM, prebuilt[i : i + 100])

    results[PACKED] = {
        "one": await timed(packed_seq, xlen),
        "inflight64": await timed(lambda: lanes(64, packed_one), xlen),
        "batch100": await timed(packed_batch, xlen),
    }
    await rt.close()

    if "faststream" not in missing:
        from faststream.redis import RedisBroker

        broker = RedisBroker(url, logger=None)  # type: ignore[arg-type]
        await broker.connect()
        fs_stream = "bench:faststream"

        async def fs_len() -> int:
            return int(await r.xlen(fs_stream)) if await r.exists(fs_stream) else 0

        async def fs_one(i: int) -> None:
            await broker.publish(payload(i), stream=fs_stream)

        async def fs_seq() -> None:
            for i in range(n):
                await fs_one(i)

        async def fs_batch() -> None:
            conn: Any = broker._connection  # FastStream publishes through its redis-py client
            for i in range(0, n, 100):
                async with conn.pipeline(transaction=False) as pipe:
                    for j in range(i, min(n, i + 100)):
                        await broker.publish(payload(j), stream=fs_stream, pipeline=pipe)
                    await pipe.execute()

        try:
            batch: float | str = await timed(fs_batch, fs_len)
        except Exception as exc:
            batch = f"error: {exc!r}"[:60]
        results["FastStream"] = {
            "one": await timed(fs_seq, fs_len),
            "inflight64": await timed(lambda: lanes(64, fs_one), fs_len),
            "batch100": batch,
        }
        await broker.stop()
    else:
        results["FastStream"] = {"note": missing["faststream"]}

    if "bullmq-py" not in missing:
        from bullmq import Queue

        async def bq_run(mode: str) -> float | str:
            q = Queue(f"produce-{mode}", {"connection": url})
            await r.flushall()
            t0 = time.perf_counter()
            if mode == "one":
                for i in range(n):
                    await q.add("noop", payload(i))
            elif mode == "inflight64":
                await lanes(64, lambda i: q.add("noop", payload(i)))
            else:
                for i in range(0, n, 100):
                    await q.addBulk([{"name": "noop", "data": payload(j)} for j in range(i, min(n, i + 100))])
            elapsed = time.perf_counter() - t0
            counts = await q.getJobCounts("wait")
            await q.close()
            stored = int(counts.get("wait", 0))
            return n / elapsed if stored == n else f"stored {stored} != {n}"

        results["BullMQ (Python)"] = {m: await bq_run(m) for m in ("one", "inflight64", "batch100")}
    else:
        results["BullMQ (Python)"] = {"note": missing["bullmq-py"]}

    if "bullmq-node" not in missing:
        await r.flushall()
        out = run_json(["node", "bench.mjs", "produce", url, str(n)], cwd=NODE_DIR)
        results["BullMQ (Node)"] = {
            m: (v["rate"] if int(v["stored"]) == n else f"stored {v['stored']} != {n}") for m, v in out.items()
        }
    else:
        results["BullMQ (Node)"] = {"note": missing["bullmq-node"]}
    await r.flushall()
    await r.aclose()
    return results


# ---------------------------------------------------------------------------------------------- 2. drain


TRACED = "novapulse (spans recorded+exported)"
PROD_TRACED = "novapulse (exported, chart sampling 10%)"
"""The Helm chart's production default: OTLP export on, ``parentbased_traceidratio`` at 0.1 (the preloaded
events carry no trace context, so each consumer span starts a trace and 10% of them are recorded)."""


async def bench_drain(url: str, n: int, missing: dict[str, str], rounds: int = 3) -> dict[str, dict[str, Any]]:
    from bench.bus.common import TYPE, bus, payload, runtime

    r = Redis.from_url(url, decode_responses=True)
    results: dict[str, dict[str, Any]] = {}

    async def preload_bus() -> None:
        rt = runtime(url)
        b = bus(rt, tracing=False)
        b.publisher.maxlen = n * 10
        for i in range(0, n, 1000):
            await b.publish_events([b.event(TYPE, payload(j)) for j in range(i, min(n, i + 1000))])
        await rt.close()

    def judged(out: dict[str, Any]) -> dict[str, Any]:
        ok = out["distinct"] == n and out["handled"] == n and out.get("pending_after", 0) == 0
        out["rate"] = n / out["elapsed"]
        out["cpu_per_10k"] = out["cpu"] / n * 10_000
        out["exactly_once"] = ok
        return out

    contenders: list[tuple[str, list[str], Callable[[], Awaitable[None]]]] = [
        ("novapulse", worker_cmd("novapulse", "drain", url, n, "--tracing"), preload_bus),
        (
            TRACED,
            worker_cmd("novapulse", "drain", url, n, "--tracing", "--export-spans"),
            preload_bus,
        ),
        (
            PROD_TRACED,
            worker_cmd(
                "novapulse",
                "drain",
                url,
                n,
                "--tracing",
                "--export-spans",
                "--sampler",
                "parentbased_traceidratio",
                "--sampler-arg",
                "0.1",
            ),
            preload_bus,
        ),
        ("novapulse (tracing off)", worker_cmd("novapulse", "drain", url, n), preload_bus),
        (
            "novapulse (tracing+idempotency off)",
            worker_cmd("novapulse", "drain", url, n, "--no-idempotency"),
            preload_bus,
        ),
        ("raw XREADGROUP/XACK", worker_cmd("raw", "drain", url, n), preload_bus),
    ]
    if "faststream" not in missing:
        from faststream.redis import RedisBroker

        async def preload_fs() -> None:
            broker = RedisBroker(url, logger=None)  # type: ignore[arg-type]
            await broker.connect()
            conn: Any = broker._connection
            for i in range(0, n, 1000):
                async with conn.pipeline(transaction=False) as pipe:
                    for j in range(i, min(n, i + 1000)):
                        await broker.publish(payload(j), stream="bench:faststream", pipeline=pipe)
                    await pipe.execute()
            await broker.stop()

        contenders.append(("FastStream", worker_cmd("faststream", "drain", url, n), preload_fs))
    if "bullmq-py" not in missing:
        from bullmq import Queue

        async def preload_bq() -> None:
            q = Queue("benchq", {"connection": url})
            for i in range(0, n, 1000):
                await q.addBulk([{"name": "noop", "data": payload(j)} for j in range(i, min(n, i + 1000))])
            await q.close()

        contenders.append(("BullMQ (Python)", worker_cmd("bullmq-py", "drain", url, n), preload_bq))
    if "bullmq-node" not in missing:

        async def preload_node() -> None:
            run_json(["node", "bench.mjs", "preload", url, str(n)], cwd=NODE_DIR)

        contenders.append(("BullMQ (Node)", ["node", "bench.mjs", "drain", url, str(n), "100"], preload_node))

    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in contenders}
    for round_ in range(rounds):  # interleaved rounds: load from other processes hits every contender alike
        for label, cmd, preload in contenders:
            if runs[label] and "error" in runs[label][-1]:
                continue
            await r.flushall()
            log(f"drain round {round_ + 1}/{rounds}: preloading {n} for {label}")
            await preload()
            try:
                runs[label].append(judged(run_json(cmd, cwd=NODE_DIR if cmd[0] == "node" else ROOT)))
            except Exception as exc:
                runs[label].append({"error": str(exc)[:300]})
    for label, outs in runs.items():
        good = [o for o in outs if "error" not in o]
        if not good:
            results[label] = outs[-1]
            continue
        results[label] = {
            "rate": statistics.median(o["rate"] for o in good),
            "rates": [round(o["rate"]) for o in good],
            "cpu_per_10k": statistics.median(o["cpu_per_10k"] for o in good),
            "rss_mb": max(o["rss_mb"] for o in good),
            "exactly_once": all(o["exactly_once"] for o in good),
            "distinct": min(o["distinct"] for o in good),
            "handled": max(o["handled"] for o in good),
        }
    for name in ("faststream", "bullmq-py", "bullmq-node"):
        if name in missing:
            results[name] = {"error": missing[name]}
    await r.flushall()
    await r.aclose()
    return results


# ---------------------------------------------------------------------------------------------- 5. growth


OTHER_GROUPS = 10
OTHER_PENDING = 1000
"""Entries each of the 10 other consumer groups holds pending (read, never acknowledged) in the large case."""


def spread(values: list[float]) -> str:
    return " ".join(f"{v:,.0f}" for v in values)


def _db_url(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


async def preload_bus_events(url: str, n: int, maxlen: int) -> None:
    """``n`` bench events published through the bus in batches of 1000 (what the drain contenders read)."""
    from bench.bus.common import TYPE, bus, payload, runtime

    rt = runtime(url)
    b = bus(rt, tracing=False)
    b.publisher.maxlen = maxlen
    for i in range(0, n, 1000):
        await b.publish_events([b.event(TYPE, payload(j)) for j in range(i, min(n, i + 1000))])
    await rt.close()


CHUNK = 10_000
ADD_CHUNK = """
local count, kinds, width, offset = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local first
for i = 0, count - 1 do
  local k = (offset + i) % kinds
  local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 5 + k * width, 4 + (k + 1) * width))
  if not first then first = id end
end
return first
"""
"""XADD of ``count`` prebuilt envelopes, cycled, in one script call (the preload's encoding stays in Redis)."""


async def preload_large_stream(url: str, entries: int) -> float:
    """Fill the bench stream with ``entries`` valid envelopes (XADD of 1000 prebuilt envelopes, cycled, in
    scripted chunks of 10k) owned by 10 other consumer groups, each positioned at a different point of the stream with
    ``OTHER_PENDING`` entries read and never acknowledged. Returns the seconds it took."""
    from bench.bus.common import TYPE, bus, payload, runtime

    t0 = time.perf_counter()
    rt = runtime(url)
    encoder = bus(rt, tracing=False)
    prebuilt = [encoder.event(TYPE, payload(i)).to_fields() for i in range(min(1000, max(1, entries)))]
    await rt.close()
    r = Redis.from_url(url, decode_responses=True)
    flat = [x for fields in prebuilt for kv in fields.items() for x in kv]
    width = len(flat) // len(prebuilt)  # every envelope has the same fields
    marks: list[str] = []
    step = max(1, -(-entries // OTHER_GROUPS))
    for seg in range(0, entries, step):
        for i in range(seg, min(entries, seg + step), CHUNK):
            count = min(CHUNK, entries - i, seg + step - i)
            first = await r.eval(ADD_CHUNK, 1, STREAM, count, len(prebuilt), width, i, *flat)
            if i == seg:
                marks.append(str(first))
    for g, mark in enumerate(marks):
        group = f"other-{g}"
        await r.xgroup_create(STREAM, group, id="0", mkstream=True)
        await r.xgroup_setid(STREAM, group, id=mark)
        await r.xreadgroup(group, "c1", {STREAM: ">"}, count=OTHER_PENDING)
    await r.aclose()
    return time.perf_counter() - t0


async def bench_grow(url: str, n: int, entries: int, rounds: int) -> dict[str, Any]:
    """Drain of ``n`` events by the default novapulse contender: fresh stream (database 1) vs a stream already
    holding ``entries`` entries of 10 other groups (database 0), interleaved rounds on one server."""
    small_url, large_url = _db_url(url, 1), _db_url(url, 0)
    r_small = Redis.from_url(small_url, decode_responses=True)
    r_large = Redis.from_url(large_url, decode_responses=True)
    await r_small.flushdb()
    await r_large.flushdb()
    log(f"grow: preloading {entries:,} entries and {OTHER_GROUPS} other groups")
    preload_s = await preload_large_stream(large_url, entries)
    info = await r_large.memory_usage(STREAM) if entries else 0
    maxlen = (entries + n * (rounds + 1)) * 2  # never trims the large stream (the other groups' entries stay)
    rates: dict[str, list[float]] = {"small": [], "large": []}
    errors: dict[str, str] = {}
    for round_ in range(rounds):
        for case, case_url, r in (("small", small_url, r_small), ("large", large_url, r_large)):
            if case == "small":
                await r.flushdb()
            else:
                with contextlib.suppress(Exception):
                    await r.xgroup_destroy(STREAM, "drain")
                await r.xgroup_create(STREAM, "drain", id="$", mkstream=True)
            length = await r.xlen(STREAM) if await r.exists(STREAM) else 0
            log(f"grow round {round_ + 1}/{rounds}: {case}, stream length {length:,}")
            await preload_bus_events(case_url, n, maxlen)
            try:
                out = run_json(worker_cmd("novapulse", "drain", case_url, n, "--tracing"))
            except Exception as exc:
                errors[case] = str(exc)[:300]
                continue
            if not (out["distinct"] == n and out["handled"] == n and out.get("pending_after", 0) == 0):
                errors[case] = f"exactly-once failed: distinct {out['distinct']} handled {out['handled']}"
                continue
            rates[case].append(n / out["elapsed"])
    await r_small.flushdb()
    await r_large.flushdb()
    await r_small.aclose()
    await r_large.aclose()
    return {"rates": rates, "errors": errors, "preload_s": preload_s, "stream_bytes": info}


# ---------------------------------------------------------------------------------------------- 6. scaling


async def drain_shared(url: str, n: int, procs: int) -> dict[str, Any]:
    """``procs`` worker processes of one group drain ``n`` preloaded events. Timed by the orchestrator from
    the ``go`` line to the first poll of ``XINFO GROUPS`` (every 5 ms) showing no lag and nothing pending."""
    r = Redis.from_url(url, decode_responses=True)
    await r.flushdb()
    await preload_bus_events(url, n, n * 10)
    cmds = [worker_cmd("novapulse", "share", url, n, "--tracing", "--name", f"w{k}") for k in range(procs)]
    ps = [
        subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for cmd in cmds
    ]
    try:
        for p in ps:
            assert p.stdout is not None
            p.stdout.readline()  # ready (imports done)
        t0 = time.perf_counter()
        for p in ps:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        deadline = time.monotonic() + 600
        elapsed = None
        while time.monotonic() < deadline:
            groups = {g["name"]: g for g in await r.xinfo_groups(STREAM)} if await r.exists(STREAM) else {}
            g = groups.get("drain")
            if g and int(g["pending"]) == 0 and int(g.get("entries-read") or 0) >= n and not g.get("lag"):
                elapsed = time.perf_counter() - t0
                break
            await asyncio.sleep(0.005)
        for p in ps:
            p.send_signal(signal.SIGTERM)
        outs = []
        for p in ps:
            out_text, err = p.communicate(timeout=60)
            lines = [ln for ln in out_text.splitlines() if ln.startswith("{") and '"ready"' not in ln]
            if not lines:
                raise RuntimeError(f"share worker failed ({p.returncode}): {err[-800:]}")
            outs.append(json.loads(lines[-1]))
    finally:
        for p in ps:
            if p.poll() is None:
                p.kill()
        await r.aclose()
    if elapsed is None:
        raise RuntimeError("group not drained within 600 s")
    seqs = [s for o in outs for s in o["seqs"]]
    return {
        "rate": n / elapsed,
        "exactly_once": len(seqs) == n and len(set(seqs)) == n and all(o["pending_after"] == 0 for o in outs),
        "per_process": [len(o["seqs"]) for o in outs],
        "distinct": len(set(seqs)),
        "handled": len(seqs),
    }


async def bench_scale(url: str, n: int, rounds: int, counts: tuple[int, ...] = (1, 2, 4)) -> dict[int, Any]:
    runs: dict[int, list[dict[str, Any]]] = {k: [] for k in counts}
    for round_ in range(rounds):  # interleaved: 1, 2, 4, 1, 2, 4, ...
        for k in counts:
            log(f"scale round {round_ + 1}/{rounds}: {k} worker process(es), {n} events")
            try:
                runs[k].append(await drain_shared(url, n, k))
            except Exception as exc:
                runs[k].append({"error": str(exc)[:300]})
    return runs


# ---------------------------------------------------------------------------------------------- 3. latency


async def bench_latency(
    url: str, seconds: float, missing: dict[str, str], extra_worker_args: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    from bench.bus.common import TYPE, bus, payload, runtime

    r = Redis.from_url(url, decode_responses=True)
    results: dict[str, dict[str, Any]] = {}
    for rate in (1000, 5000):
        total = int(rate * seconds)
        await r.flushall()
        cmd = worker_cmd("novapulse", "latency", url, total, "--tracing", "--group", "lat", *extra_worker_args)
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()  # ready
        rt = runtime(url)
        b = bus(rt, tracing=True)

        async def consumer_reading() -> bool:
            try:
                return bool(await r.xinfo_consumers(STREAM, "lat"))
            except Exception:
                return False

        deadline = time.monotonic() + 30
        while not await consumer_reading() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        start = time.perf_counter()
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - start) * rate))
            if due > sent:
                now = time.time_ns()
                await b.publish_events([b.event(TYPE, payload(j, now)) for j in range(sent, due)])
                sent = due
            else:
                await asyncio.sleep(0.0005)
        out_text, err = proc.communicate(timeout=120)
        await rt.close()
        lines = [ln for ln in out_text.splitlines() if ln.startswith("{") and '"ready"' not in ln]
        if not lines:
            results[f"novapulse @{rate}/s"] = {"error": err[-300:]}
            continue
        out = json.loads(lines[-1])
        results[f"novapulse @{rate}/s"] = {**out["latency_ms"], "count": out["distinct"], "expected": total}
        if "split_ms" in out:
            results[f"novapulse @{rate}/s"]["split"] = out["split_ms"]
    if "bullmq-node" not in missing:
        for rate in (1000, 5000):
            await r.flushall()
            try:
                out = run_json(["node", "bench.mjs", "latency", url, str(rate), str(seconds)], cwd=NODE_DIR)
                results[f"BullMQ (Node) @{rate}/s"] = out
            except Exception as exc:
                results[f"BullMQ (Node) @{rate}/s"] = {"error": str(exc)[:300]}
    await r.flushall()
    await r.aclose()
    return results


# ---------------------------------------------------------------------------------------------- main


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = (
        [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)] if rows else [len(h) for h in header]
    )
    print(f"\n== {title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def median_modes(runs: list[dict[str, dict[str, float | str]]]) -> dict[str, dict[str, float | str]]:
    """Per producer and mode, the median rate of the rounds (or the first error)."""
    merged: dict[str, dict[str, float | str]] = {}
    for label, modes in runs[0].items():
        merged[label] = {}
        for mode, first in modes.items():
            values = [run[label][mode] for run in runs if label in run and mode in run[label]]
            rates = [v for v in values if isinstance(v, float)]
            merged[label][mode] = statistics.median(rates) if len(rates) == len(values) else first
    return merged


def num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) else None


async def run(args: argparse.Namespace) -> None:
    from novapulse_devkit.servers import free_port, redis_server

    missing = install_anchors()
    tmp = Path(tempfile.mkdtemp(prefix="bench-bus-"))
    port = free_port()
    server = redis_server(port, tmp / "redis").start()
    url = f"redis://127.0.0.1:{port}/0"
    summary: dict[str, str] = {}
    try:
        version = (await Redis.from_url(url).info("server"))["redis_version"]
        print(f"bus-bench: redis {version} on port {port}, {os.cpu_count()} CPUs, payload ~200 B of JSON data")
        # 2. drain first: the headline figure
        if "drain" in args.only:
            drain = await bench_drain(url, args.drain_n, missing, args.rounds)
            rows = []
            for label, d in drain.items():
                if "error" in d:
                    rows.append([label, "n/a", "n/a", "n/a", "n/a", d["error"][:80]])
                    continue
                rows.append(
                    [
                        label,
                        fmt(d["rate"]),
                        fmt(d["cpu_per_10k"], 2),
                        fmt(d["rss_mb"], 1),
                        "yes" if d["exactly_once"] else f"NO ({d['distinct']}/{d['handled']})",
                        "runs: " + " ".join(f"{x:,}" for x in d["rates"]),
                    ]
                )
            print_table(
                f"drain {args.drain_n} preloaded events, 1 worker process, concurrency 100, no-op handler "
                f"(median of {args.rounds} interleaved rounds)",
                ["contender", "events/s", "cpu_s/10k", "peak_rss_MB", "exactly_once", "note"],
                rows,
            )
            print(
                "  novapulse = the defaults: tracing on (no exporter configured, as in the default deployment: the\n"
                "  trace context is propagated, no span recorded), idempotency on; 'spans recorded+exported' adds a\n"
                "  span exporter (BatchSpanProcessor to a discarding exporter): every event records a consumer span;\n"
                "  'chart sampling 10%' is the Helm chart's production default (export on, parent-based ratio 0.1)"
            )
            ours = num(drain.get("novapulse", {}).get("rate"))
            bullmq = num(drain.get("BullMQ (Node)", {}).get("rate"))
            for key, label in (("BullMQ (Node)", "drain_vs_bullmq"), ("FastStream", "drain_vs_faststream")):
                theirs = num(drain.get(key, {}).get("rate"))
                summary[label] = f"{ours / theirs:.2f}" if ours and theirs else "n/a"
            for key, label in ((TRACED, "drain_traced_vs_bullmq"), (PROD_TRACED, "drain_prod_traced_vs_bullmq")):
                traced = num(drain.get(key, {}).get("rate"))
                summary[label] = f"{traced / bullmq:.2f}" if traced and bullmq else "n/a"
            rss = num(drain.get("novapulse", {}).get("rss_mb"))
            summary["worker_rss_mb"] = f"{rss:.1f}" if rss else "n/a"
            for key in ("BullMQ (Python)", "raw XREADGROUP/XACK"):
                theirs = num(drain.get(key, {}).get("rate"))
                if ours and theirs:
                    print(f"  ratio novapulse / {key}: {ours / theirs:.2f}")
        # 1. produce
        if "produce" in args.only:
            produce_runs = []
            for round_ in range(args.rounds):
                log(f"produce round {round_ + 1}/{args.rounds}")
                produce_runs.append(await bench_produce(url, args.produce_n, missing))
            produce = median_modes(produce_runs)
            rows = []
            for label, modes in produce.items():
                if "note" in modes:
                    rows.append([label, "n/a", "n/a", "n/a", str(modes["note"])[:80]])
                    continue
                cells = [
                    fmt(m) if isinstance(m, float) else str(m)
                    for m in (modes[k] for k in ("one", "inflight64", "batch100"))
                ]
                rows.append([label, *cells, ""])
            print_table(
                f"produce {args.produce_n} events (events/s, median of {args.rounds} rounds)",
                ["producer", "one_at_a_time", "64_in_flight", "batch_100", "note"],
                rows,
            )
            raw = produce["raw redis-py XADD"]
            ours_p = produce["novapulse"]
            for mode in ("one", "inflight64", "batch100"):
                a, b_ = num(ours_p.get(mode)), num(raw.get(mode))
                if a and b_:
                    print(f"  ratio novapulse / raw ({mode}): {a / b_:.2f}")
            a, b_ = num(ours_p.get("batch100")), num(produce.get(PACKED, {}).get("batch100"))
            if a and b_:
                print(f"  ratio novapulse / {PACKED} (batch100): {a / b_:.2f} (the envelope's share of the cost)")
            for other in ("BullMQ (Node)", "BullMQ (Python)", "FastStream"):
                a, b_ = num(ours_p.get("batch100")), num(produce.get(other, {}).get("batch100"))
                if a and b_:
                    print(f"  ratio novapulse / {other} (batch_100): {a / b_:.2f}")
            a, b_ = num(ours_p.get("batch100")), num(raw.get("batch100"))
            summary["produce_batch_vs_raw"] = f"{a / b_:.2f}" if a and b_ else "n/a"
        # 3. latency
        if "latency" in args.only:
            lat = await bench_latency(url, args.latency_seconds, missing)
            rows = []
            for label, d in lat.items():
                if "error" in d:
                    rows.append([label, "n/a", "n/a", "n/a", d["error"][:80]])
                    continue
                note = d.get("note", "")
                if "expected" in d and d["count"] != d["expected"]:
                    note = f"handled {d['count']}/{d['expected']}"
                rows.append([label, fmt(d["p50"], 2), fmt(d["p99"], 2), fmt(d["p999"], 2), note])
            print_table(
                f"open-loop latency publish -> handler start, {args.latency_seconds:g} s per rate (ms)",
                ["contender", "p50", "p99", "p99.9", "note"],
                rows,
            )
            for label, d in lat.items():
                if "split" in d:
                    to, frm = d["split"]["to_redis"], d["split"]["from_redis"]
                    print(
                        f"  {label}: publish -> XADD ran p50 {to['p50']:.2f} p99 {to['p99']:.2f}; XADD ran -> handler "
                        f"p50 {frm['p50']:.2f} p99 {frm['p99']:.2f} (ms; Redis's clock in the entry id, whole ms)"
                    )
            p99 = num(lat.get("novapulse @5000/s", {}).get("p99"))
            summary["p99_ms_at_5k"] = f"{p99:.2f}" if p99 is not None else "n/a"
        # 4. recovery
        if "recovery" in args.only:
            from bench.bus.recovery import CLAIM_IDLE, bullmq_recovery, novapulse_recovery

            recs: dict[str, dict[str, Any]] = {"novapulse": await novapulse_recovery(url, args.recovery_n)}
            if "bullmq-node" not in missing:
                try:
                    recs["BullMQ (Node)"] = await bullmq_recovery(url, args.recovery_n)
                except Exception as exc:
                    recs["BullMQ (Node)"] = {"error": str(exc)[:200]}
            rows = []
            for label, d in recs.items():
                if "error" in d:
                    rows.append([label, "n/a", "n/a", "n/a", "n/a", "n/a", d["error"][:80]])
                    continue
                rows.append(
                    [
                        label,
                        str(d["lost"]),
                        str(d["duplicates"]),
                        fmt(d["recovery_s"], 2),
                        str(d["victim_in_flight_at_kill"]),
                        f"{d['dead_letters']}/{d['poison']} after {d['deliveries_before_dead_letter']}",
                        d["threshold_s"],
                    ]
                )
            print_table(
                f"recovery: {args.recovery_n} events, 4 consumer processes, kill -9 of one, 1% poison",
                ["contender", "lost", "duplicates", "recovery_s", "victim_in_flight", "dead_letters", "threshold"],
                rows,
            )
            ours_rec = recs["novapulse"]
            summary["lost"] = str(ours_rec["lost"])
            rs = ours_rec["recovery_s"]
            summary["recovery_s"] = f"{rs:.2f}" if rs is not None else "n/a"
            print(f"  target: recovery <= idle threshold ({CLAIM_IDLE:g} s) + 1 s")
        # 5. cost as work grows
        if "grow" in args.only:
            t_grow = time.perf_counter()
            grow = await bench_grow(url, args.drain_n, args.grow_entries, args.rounds)
            rows = []
            large_label = f"{args.grow_entries:,} entries, {OTHER_GROUPS} other groups"
            for case, label in (("small", "fresh stream"), ("large", large_label)):
                vals = grow["rates"][case]
                err = grow["errors"].get(case, "")
                rows.append([label, fmt(statistics.median(vals)) if vals else "n/a", "runs: " + spread(vals), err[:80]])
            print_table(
                f"cost as work grows: drain {args.drain_n} events, novapulse defaults, 1 worker process "
                f"(median of {args.rounds} interleaved rounds)",
                ["stream", "events/s", "spread", "note"],
                rows,
            )
            print(
                f"  large stream: preloaded in {grow['preload_s']:.1f} s (scripted XADD of valid envelopes), "
                f"{(grow['stream_bytes'] or 0) / 2**20:,.0f} MB in Redis; each other group holds "
                f"{OTHER_PENDING} pending entries; the drain group starts at the stream's end; "
                f"part took {time.perf_counter() - t_grow:.1f} s"
            )
            small, large = grow["rates"]["small"], grow["rates"]["large"]
            summary["drain_growth_ratio"] = (
                f"{statistics.median(large) / statistics.median(small):.2f}" if small and large else "n/a"
            )
            print("  target: drain_growth_ratio (large / small) >= 0.8")
        # 6. horizontal scaling
        if "scale" in args.only:
            t_scale = time.perf_counter()
            scale = await bench_scale(url, args.scale_n, args.rounds)
            rows = []
            medians: dict[int, float] = {}
            for k, outs in scale.items():
                good = [o for o in outs if "error" not in o]
                if not good:
                    rows.append([str(k), "n/a", "", "", outs[-1].get("error", "")[:80]])
                    continue
                medians[k] = statistics.median(o["rate"] for o in good)
                once = all(o["exactly_once"] for o in good)
                rows.append(
                    [
                        str(k),
                        fmt(medians[k]),
                        "runs: " + spread([o["rate"] for o in good]),
                        "yes" if once else f"NO ({min(o['distinct'] for o in good)}/{max(o['handled'] for o in good)})",
                        "per process (last round): " + "/".join(str(c) for c in good[-1]["per_process"]),
                    ]
                )
            print_table(
                f"horizontal scaling: drain {args.scale_n} events, one consumer group, novapulse defaults, "
                f"concurrency 100 per process (median of {args.rounds} interleaved rounds)",
                ["processes", "events/s", "spread", "exactly_once", "note"],
                rows,
            )
            print(
                "  timed by the orchestrator: from 'go' to the first XINFO GROUPS poll (5 ms) with no lag and nothing\n"
                f"  pending; {os.cpu_count()} CPUs (expect ~2x at 2 processes on 2 cores); "
                f"part took {time.perf_counter() - t_scale:.1f} s"
            )
            for k, key in ((2, "scale_2x"), (4, "scale_4x")):
                summary[key] = f"{medians[k] / medians[1]:.2f}" if k in medians and 1 in medians else "n/a"
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    keys = (
        "drain_vs_bullmq",
        "drain_vs_faststream",
        "produce_batch_vs_raw",
        "p99_ms_at_5k",
        "lost",
        "recovery_s",
        "drain_traced_vs_bullmq",
        "drain_prod_traced_vs_bullmq",
        "worker_rss_mb",
        "drain_growth_ratio",
        "scale_2x",
        "scale_4x",
    )
    print("bus-bench: " + " ".join(f"{k}={summary.get(k, 'n/a')}" for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bus", description=__doc__)
    parser.add_argument("--produce-n", type=int, default=int(os.environ.get("BENCH_PRODUCE_N", 20_000)))
    parser.add_argument("--drain-n", type=int, default=int(os.environ.get("BENCH_DRAIN_N", 20_000)))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    parser.add_argument("--latency-seconds", type=float, default=float(os.environ.get("BENCH_LATENCY_S", 10)))
    parser.add_argument("--recovery-n", type=int, default=int(os.environ.get("BENCH_RECOVERY_N", 20_000)))
    parser.add_argument(
        "--grow-entries",
        type=int,
        default=int(os.environ.get("BENCH_GROW_ENTRIES", 1_000_000)),
        help="entries already in the stream (10 other groups) for the cost-as-work-grows drain",
    )
    parser.add_argument("--scale-n", type=int, default=int(os.environ.get("BENCH_SCALE_N", 40_000)))
    parser.add_argument(
        "--only",
        nargs="*",
        choices=["drain", "produce", "latency", "recovery", "grow", "scale"],
        default=["drain", "produce", "latency", "recovery", "grow", "scale"],
    )
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
