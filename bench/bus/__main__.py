"""Bus benchmarks: ``python -m bench.bus`` (``make bench-bus``).

Starts a fresh ``redis-server`` on a free port, installs its anchors (the ``bench`` dependency group with uv,
npm ``bullmq`` in bench/node), then runs, side by side on that server:

1. produce: one at a time, 64 in flight, batches of 100 (bus vs raw redis-py, FastStream, Python and Node BullMQ)
2. drain: preloaded events, one worker process, concurrency 100, no-op handler (CPU s per 10k, peak RSS)
3. open-loop latency from publish to handler start at 1k and 5k events/s (bus vs Node BullMQ)
4. recovery: 4 consumer processes, kill -9 of one holding in-flight work, 1% poison events

Every run checks that each event was handled exactly once (distinct count and pending entries). The last line
is the summary line. Sizes: ``--produce-n``, ``--drain-n``, ``--latency-seconds``, ``--recovery-n``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import os
import shutil
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
    )
    print("bus-bench: " + " ".join(f"{k}={summary.get(k, 'n/a')}" for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bus", description=__doc__)
    parser.add_argument("--produce-n", type=int, default=int(os.environ.get("BENCH_PRODUCE_N", 20_000)))
    parser.add_argument("--drain-n", type=int, default=int(os.environ.get("BENCH_DRAIN_N", 20_000)))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    parser.add_argument("--latency-seconds", type=float, default=float(os.environ.get("BENCH_LATENCY_S", 10)))
    parser.add_argument("--recovery-n", type=int, default=int(os.environ.get("BENCH_RECOVERY_N", 20_000)))
    parser.add_argument("--only", nargs="*", default=["drain", "produce", "latency", "recovery"])
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
