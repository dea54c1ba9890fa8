"""One benchmark worker process: ``python -m bench.bus.worker <kind> <mode> <redis_url> <n> [options]``.

Prints one JSON line with its measurements: elapsed seconds from the start of consumption to the last event
handled, CPU seconds over that span, peak RSS, handled and distinct counts (and latencies in ``latency``
mode).

``share`` mode (novapulse only) is for N processes of one consumer group sharing a total: the process prints
``{"ready": true}``, waits for a ``go`` line on stdin, consumes until SIGTERM (the orchestrator sends it once
the group has no lag and nothing pending) and prints the sequence numbers it handled (``seqs``), so the
orchestrator can check that the distinct ids across processes equal the total.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import resource
import signal
import sys
import time
from typing import Any

STREAM = "bench:events:bench"


def _rss_mb() -> float:
    """Peak resident set of this process (VmHWM). getrusage's ru_maxrss is not used: on Linux it keeps the
    parent's high-water mark across fork+exec, so every child would report the orchestrator's size."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Tally:
    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.seen: set[int] = set()
        self.latencies: list[float] = []
        self.to_redis: list[float] = []  # publish -> XADD ran (ms; the entry id has whole milliseconds)
        self.from_redis: list[float] = []  # XADD ran -> handler start (ms)
        self.done = asyncio.Event()
        self.t0 = 0.0
        self.c0 = 0.0
        self.t1 = 0.0
        self.c1 = 0.0

    def start(self) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def hit(self, seq: int, sent_ns: int = 0, entry_id: str = "") -> None:
        if sent_ns:
            now = time.time_ns()
            self.latencies.append((now - sent_ns) / 1e6)
            if entry_id:  # the entry id's millisecond part is Redis's clock when the XADD ran (same host)
                added_ms = int(entry_id.partition("-")[0])
                self.to_redis.append(added_ms - sent_ns / 1e6)
                self.from_redis.append(now / 1e6 - added_ms)
        self.count += 1
        self.seen.add(seq)
        if len(self.seen) >= self.n and not self.done.is_set():
            self.t1, self.c1 = time.perf_counter(), time.process_time()
            self.done.set()

    def report(self, **extra: Any) -> None:
        out: dict[str, Any] = {
            "elapsed": self.t1 - self.t0,
            "cpu": self.c1 - self.c0,
            "rss_mb": _rss_mb(),
            "handled": self.count,
            "distinct": len(self.seen),
            **extra,
        }
        if self.latencies:
            from bench.bus.common import percentiles

            out["latency_ms"] = percentiles(self.latencies)
        if self.to_redis:
            from bench.bus.common import percentiles

            out["split_ms"] = {"to_redis": percentiles(self.to_redis), "from_redis": percentiles(self.from_redis)}
        print(json.dumps(out), flush=True)


async def novapulse(args: argparse.Namespace, tally: Tally) -> dict[str, Any]:
    from bench.bus.common import TYPE, BenchPayload, DiscardExporter, bus, runtime
    from novapulse_runtime.bus import Event

    rt = runtime(
        args.redis, args.concurrency, export_spans=args.export_spans, sampler=args.sampler, sampler_arg=args.sampler_arg
    )
    b = bus(rt, tracing=args.tracing)
    consumer = b.consumer(
        args.group,
        sources=["bench"],
        concurrency=args.concurrency,
        idempotent=not args.no_idempotency,
        handler_timeout=args.handler_timeout,
        claim_idle=args.claim_idle,
        max_deliveries=args.max_deliveries,
        backoff_base=0.05,
        backoff_max=0.2,
        block_ms=100,
        name=args.name,
    )
    latency = args.mode == "latency"
    record = args.mode == "recovery"
    share = args.mode == "share"

    @consumer.on(TYPE)
    async def handle(event: Event) -> None:
        data = event.data
        assert isinstance(data, BenchPayload)
        if latency:
            tally.hit(data.seq, data.sent_ns, event.entry_id)
            return
        if record:
            if data.seq % 100 == 99:  # 1% poison
                raise RuntimeError("poison")
            await asyncio.sleep(0.002)
            await rt.redis.rpush("bench:handled", data.seq)
        tally.hit(data.seq)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if share:
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the orchestrator's "go"
    task = asyncio.create_task(consumer.run(stop))
    if not share:
        print(json.dumps({"ready": True}), flush=True)
    tally.start()
    if record or share:
        await stop.wait()
    else:
        await tally.done.wait()
    stop.set()
    await task
    pending = await rt.redis.xpending(STREAM, args.group)
    await rt.close()
    rt.tracing.shutdown()  # after the measured span: the spans still queued reach the exporter
    spans: dict[str, Any] = {}
    exporter = rt.tracing.exporter
    if isinstance(exporter, DiscardExporter):
        spans = {"spans_exported": exporter.received}
    if share:
        tally.t1, tally.c1 = time.perf_counter(), time.process_time()
        return {"pending_after": int(pending["pending"]), "seqs": sorted(tally.seen), **spans}
    return {"pending_after": int(pending["pending"]), **spans}


async def raw(args: argparse.Namespace, tally: Tally) -> dict[str, Any]:
    from redis.asyncio import Redis
    from redis.exceptions import ResponseError

    r = Redis.from_url(args.redis, decode_responses=True)
    with contextlib.suppress(ResponseError):
        await r.xgroup_create(STREAM, "raw", id="0", mkstream=True)
    print(json.dumps({"ready": True}), flush=True)
    tally.start()
    while not tally.done.is_set():
        resp: Any = await r.xreadgroup("raw", "c1", {STREAM: ">"}, count=args.concurrency, block=1000)
        if not resp:
            continue
        ids = []
        for _stream, entries in resp:
            for eid, fields in entries:
                ids.append(eid)
                data = json.loads(fields["data"])
                tally.hit(data["seq"])
        await r.xack(STREAM, "raw", *ids)
    pending = await r.xpending(STREAM, "raw")
    await r.aclose()
    return {"pending_after": int(pending["pending"])}


async def faststream(args: argparse.Namespace, tally: Tally) -> dict[str, Any]:
    from faststream.redis import RedisBroker, StreamSub

    logging.getLogger("faststream").setLevel(logging.WARNING)
    broker = RedisBroker(args.redis, logger=None)  # type: ignore[arg-type]
    stream = "bench:faststream"

    @broker.subscriber(  # type: ignore[untyped-decorator]
        stream=StreamSub(stream, group="fs", consumer="c1", max_records=args.concurrency, last_id="0"),
        max_workers=args.concurrency,
    )
    async def handle(msg: dict[str, Any]) -> None:
        tally.hit(int(msg["seq"]))

    print(json.dumps({"ready": True}), flush=True)
    tally.start()
    await broker.start()
    await tally.done.wait()
    await broker.stop()
    from redis.asyncio import Redis

    r = Redis.from_url(args.redis, decode_responses=True)
    pending = await r.xpending(stream, "fs")
    await r.aclose()
    return {"pending_after": int(pending["pending"])}


async def bullmq_py(args: argparse.Namespace, tally: Tally) -> dict[str, Any]:
    from bullmq import Worker

    async def process(job: Any, _token: str) -> None:
        tally.hit(int(job.data["seq"]))

    print(json.dumps({"ready": True}), flush=True)
    tally.start()
    worker = Worker("benchq", process, {"connection": args.redis, "concurrency": args.concurrency})
    await tally.done.wait()
    await worker.close()
    return {}


KINDS = {"novapulse": novapulse, "raw": raw, "faststream": faststream, "bullmq-py": bullmq_py}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("mode", choices=["drain", "latency", "recovery", "share"])
    parser.add_argument("redis")
    parser.add_argument("n", type=int)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--tracing", action="store_true")
    parser.add_argument("--export-spans", action="store_true", help="record spans into a BatchSpanProcessor")
    parser.add_argument("--sampler", default="parentbased_always_on", help="OTEL_TRACES_SAMPLER of the worker")
    parser.add_argument("--sampler-arg", type=float, default=1.0, help="OTEL_TRACES_SAMPLER_ARG of the worker")
    parser.add_argument("--no-idempotency", action="store_true")
    parser.add_argument("--group", default="drain")
    parser.add_argument("--name", default="")
    parser.add_argument("--handler-timeout", type=float, default=30.0)
    parser.add_argument("--claim-idle", type=float, default=0.0)
    parser.add_argument("--max-deliveries", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    tally = Tally(args.n)
    extra = asyncio.run(KINDS[args.kind](args, tally))
    tally.report(**extra)
    sys.exit(0)


if __name__ == "__main__":
    main()
