"""Multi-instance load test through the real gateway: ``python -m bench.scale`` (``make bench-scale``).

For each shape ``N x M`` (default ``1x1`` then ``2x2``): ``make run``'s stack (Redis, nx-27017, the production
nginx gateway ``deploy/nginx/nginx.conf`` with an ``upstream`` block of N api processes per service and
keepalive, N api and M worker processes of auth and webhook) and a local webhook receiver; 32 seeded users;
then ``SCALE_BENCH_SECONDS`` (60) of mixed load from ``SCALE_BENCH_CONCURRENCY`` (32) virtual clients,
through the gateway only (:mod:`.load`); then up to ``SCALE_BENCH_DRAIN`` (60) seconds for every accepted
event to reach the receiver.

Prints per route: requests, rps (2xx answers per second), p50/p99 ms, errors (neither 2xx nor 429; includes
transport errors) and 429s; the spread of the per-second throughput; events accepted and lost; the CPU
seconds each kind of process used during the load (psutil), and what the rest of the machine used; the
load average at start and end (other engineers' test runs share these 2 cores: figures are noisy). Then the
scaling factors (last shape / first shape), overall and for the argon2id routes (register, log-in).

Last line, exactly: ``scale-bench: rps_1x=<n> rps_2x=<n> scaling=<x> errors=<n> lost=<n>`` (errors and lost
summed over the shapes).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from novapulse_devkit.servers import cpu_seconds

from .cluster import SERVICES, cluster, pick_offset
from .load import CPU_ROUTES, WEIGHTS, Recorder, drain, run_load, seed_users, session


@dataclass
class ShapeResult:
    label: str
    rps: float
    cpu_rps: float
    errors: int
    lost: int
    cores_used: float
    """CPU-s per second used by the stack, receiver and load generator during the load."""


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _shape(text: str) -> tuple[int, int]:
    apis, _, workers = text.strip().lower().partition("x")
    return int(apis), int(workers)


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system, every thread) used so far by each kind of process."""
    out: dict[str, float] = {}
    for kind, ids in pids.items():
        out[kind] = sum(used for used in map(cpu_seconds, ids) if not math.isnan(used))  # a process gone: 0
    return out


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0))


def _print_routes(rec: Recorder, elapsed: float) -> tuple[float, float, int]:
    print(f"  {'route':<34}{'requests':>9}{'rps':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'429s':>7}")
    ok_all = ok_cpu = errors = 0
    lat_all: list[float] = []
    n_all = n429 = 0
    for route in sorted(rec.statuses):
        counts = rec.statuses[route]
        n = sum(counts.values())
        ok = sum(c for s, c in counts.items() if 200 <= s < 300)
        limited = counts.get(429, 0)
        err = n - ok - limited
        lat = rec.latencies[route]
        print(
            f"  {route:<34}{n:>9}{ok / elapsed:>9.1f}{_pct(lat, 0.5):>9.1f}{_pct(lat, 0.99):>9.1f}{err:>8}{limited:>7}"
        )
        ok_all += ok
        errors += err
        n_all += n
        n429 += limited
        lat_all += lat
        if route in CPU_ROUTES:
            ok_cpu += ok
    print(
        f"  {'all routes':<34}{n_all:>9}{ok_all / elapsed:>9.1f}{_pct(lat_all, 0.5):>9.1f}"
        f"{_pct(lat_all, 0.99):>9.1f}{errors:>8}{n429:>7}"
    )
    return ok_all / elapsed, ok_cpu / elapsed, errors


async def _measure(
    label: str, gateway: str, receiver: str, pids: dict[str, list[int]], args: argparse.Namespace
) -> ShapeResult:
    async with session(args.concurrency) as http:
        seeds = await seed_users(http, gateway, receiver, args.seeds)
        me = psutil.Process()
        cpu0, own0, busy0 = _cpu(pids), me.cpu_times(), _machine_busy()
        rec, elapsed = await run_load(http, gateway, receiver, seeds, args.seconds, args.concurrency)
        cpu1, own1, busy1 = _cpu(pids), me.cpu_times(), _machine_busy()
        lost, waited = await drain(http, receiver, rec.accepted, args.drain)
    rps, cpu_rps, errors = _print_routes(rec, elapsed)
    full = [rec.per_second.get(s, 0) for s in range(int(elapsed))]
    if full:
        print(
            f"  per-second 2xx throughput over {len(full)} s: min {min(full)} / p10 {_pct(full, 0.1):.0f} / median "
            f"{statistics.median(full):.0f} / p90 {_pct(full, 0.9):.0f} / max {max(full)}"
        )
    print(f"  events accepted {len(rec.accepted)}, lost {lost} (waited {waited:.1f} s for the last delivery)")
    for failure, count in rec.failures.most_common(5):
        print(f"  error x{count}: {failure}")
    cores = psutil.cpu_count() or 1
    capacity = cores * elapsed
    used = {kind: cpu1[kind] - cpu0.get(kind, 0.0) for kind in cpu1}
    used["load generator (this process)"] = (own1.user + own1.system) - (own0.user + own0.system)
    ours = sum(used.values())
    busy = busy1 - busy0
    print(f"  CPU during the load ({cores} cores x {elapsed:.1f} s = {capacity:.0f} CPU-s):")
    for kind, secs in sorted(used.items(), key=lambda kv: -kv[1]):
        print(f"    {kind:<34}{secs:>8.1f} CPU-s {100 * secs / capacity:>6.1f}%")
    rest = max(busy - ours, 0.0)
    idle = max(capacity - busy, 0.0)
    print(f"    {'everything else on the machine':<34}{rest:>8.1f} CPU-s {100 * rest / capacity:>6.1f}%")
    print(f"    {'idle':<34}{idle:>8.1f} CPU-s {100 * idle / capacity:>6.1f}%")
    auth_cpu = sum(secs for kind, secs in used.items() if kind.startswith("auth-api"))
    hashes = cpu_rps * elapsed
    print(
        f"  our processes used {ours / elapsed:.2f} of {cores} cores on average; auth-api "
        f"{1000 * auth_cpu / hashes if hashes else float('nan'):.0f} CPU-ms per argon2id request "
        f"({auth_cpu / elapsed:.2f} cores); {rps * elapsed / ours if ours else float('nan'):.1f} 2xx answers "
        "per CPU-s of ours"
    )
    return ShapeResult(label, rps, cpu_rps, errors, lost, ours / elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=_env_float("SCALE_BENCH_SECONDS", 60.0))
    parser.add_argument("--concurrency", type=int, default=int(_env_float("SCALE_BENCH_CONCURRENCY", 32)))
    parser.add_argument("--drain", type=float, default=_env_float("SCALE_BENCH_DRAIN", 60.0))
    parser.add_argument("--seeds", type=int, default=int(_env_float("SCALE_BENCH_SEEDS", 32)))
    parser.add_argument(
        "--shapes",
        default=os.environ.get("SCALE_BENCH_SHAPES") or "1x1,2x2",
        help="N x M shapes, comma-separated: N api processes per service, M worker processes per service",
    )
    args = parser.parse_args()
    shapes = [_shape(text) for text in args.shapes.split(",")]
    cores = psutil.cpu_count()
    mix = ":".join(str(w) for w in WEIGHTS.values())
    print(
        f"scale-bench: {cores} CPUs, load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{args.seconds:.0f} s per shape, {args.concurrency} clients, {args.seeds} seeded users; "
        f"mix {'/'.join(WEIGHTS)} = {mix}; services {', '.join(SERVICES)}"
    )
    offset = pick_offset(max(a for a, _ in shapes), max(w for _, w in shapes))
    results = []
    for apis, workers in shapes:
        label = f"{apis}x{workers}"
        print(f"== {label}: {apis} api + {workers} worker processes per service, gateway port offset {offset} ==")
        with cluster(apis, workers, offset) as c:
            results.append(asyncio.run(_measure(label, c.gateway, c.receiver, c.pids, args)))
    first, last = results[0], results[-1]
    scaling = last.rps / first.rps if first.rps else 0.0
    cpu_scaling = last.cpu_rps / first.cpu_rps if first.cpu_rps else 0.0
    print(
        f"scaling {last.label} / {first.label}: all routes {scaling:.2f}x ({first.rps:.1f} -> {last.rps:.1f} rps), "
        f"argon2id routes (register + log-in) {cpu_scaling:.2f}x ({first.cpu_rps:.1f} -> {last.cpu_rps:.1f} rps)"
    )
    print(
        f"cores used by our processes: {first.label} {first.cores_used:.2f}, {last.label} {last.cores_used:.2f} "
        f"(x{last.cores_used / first.cores_used if first.cores_used else 0.0:.2f}): a scaling beyond it is efficiency, "
        "within it is more CPU share"
    )
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other work shares the machine)")
    errors = sum(r.errors for r in results)
    lost = sum(r.lost for r in results)
    print(
        f"scale-bench: rps_1x={first.rps:.1f} rps_2x={last.rps:.1f} scaling={scaling:.2f} errors={errors} lost={lost}"
    )


if __name__ == "__main__":
    main()
