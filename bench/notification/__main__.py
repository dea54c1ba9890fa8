"""Notification benchmark: ``python -m bench.notification`` (``make bench-notification``).

Cost as work grows: events handled per second by the real notification worker process (consumer group
``notification``; e-mail to its local mail catcher and the in-app notice) with 1,000 users in its user
projection, then with 100,000. Starts its own redis-server and nx-27017 and ``python -m novapulse_notification
worker``; the projection is seeded directly in the shape the worker's ``Repository.apply_user_change`` writes
for ``user.registered`` (100 users per organisation); the workload is ``user.password_changed`` for distinct
seeded users spread over the projection (a security notice: e-mail + in-app, critical), published with
pipelined XADD of valid envelopes. A run is timed from the first publish to the first poll of ``XINFO
GROUPS`` (every 10 ms) showing the group with no lag and nothing pending.

Sizes: ``--small`` (1,000), ``--large`` (100,000), ``--events`` per run (300), ``--rounds`` (3): the rounds of
the small case run first, then the projection grows to ``--large`` and the large rounds run (medians, every
round's figure printed). Seeding 100k projected users takes ~10-20 s (extrapolated from small runs).

Each round also takes the CPU time (user + system, Linux ``/proc``) the worker process (with its in-process
mail catcher) and the storage server (nx-27017) spent on it, per handled event: on a loaded machine these move
far less than events/s do.

Last line: ``notification-bench: handled_per_s_small=<x> handled_per_s_large=<x> handling_growth_ratio=<large/small>
worker_cpu_ms_small=<ms> worker_cpu_ms_large=<ms> storage_cpu_ms_small=<ms> storage_cpu_ms_large=<ms>`` (target:
ratio >= 0.8; CPU figures are medians per event, ``nan`` where ``/proc`` is not available).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from novapulse_devkit.servers import cpu_seconds, free_port, mongo_server, port_open, redis_server
from novapulse_notification.constants import DELIVERIES, USERS, DeliveryState
from novapulse_runtime.bus.envelope import build, encode
from novapulse_runtime.documents import by_index, count

GROUP = "notification"
DB = "bench_notification"
PER_ORG = 100


def org_of(i: int) -> str:
    return f"{i // PER_ORG:032x}"


def user_of(i: int) -> str:
    return f"{i + 1:032x}"


async def seed_projection(mongo_url: str, first: int, count: int) -> float:
    """Users ``first`` .. ``first + count - 1`` in the projection, as ``apply_user_change`` stores a
    ``user.registered`` (fields, their ``v_`` versions, ``org_id``, ``user_id``, ``updated_ms``)."""
    t0 = time.perf_counter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    now_ms = int(time.time() * 1000)
    try:
        users = client[DB][USERS]
        for i in range(first, first + count, 2000):
            docs = []
            for j in range(i, min(first + count, i + 2000)):
                org_id, user_id = org_of(j), user_of(j)
                fields = {
                    "email": f"user{j}@example.com",
                    "name": f"User {j}",
                    "role": "owner" if j % PER_ORG == 0 else "member",
                    "status": "active",
                    "organization": f"Org {j // PER_ORG}",
                }
                docs.append(
                    {
                        "_id": f"{org_id}:{user_id}",
                        **fields,
                        **{f"v_{k}": now_ms - 60_000 for k in fields},
                        "org_id": org_id,
                        "user_id": user_id,
                        "updated_ms": now_ms - 60_000,
                    }
                )
            await users.insert_many(docs, ordered=False)
    finally:
        await client.close()
    return time.perf_counter() - t0


async def handled_rate(redis: Redis, stream: str, picks: list[int], total_before: int) -> float:
    """Publish ``user.password_changed`` for the users ``picks``; events/s until the group is drained."""
    t0 = time.perf_counter()
    for i in range(0, len(picks), 100):
        pipe = redis.pipeline(transaction=False)
        for j in picks[i : i + 100]:
            event = build(
                "user.password_changed", {"user_id": user_of(j), "org_id": org_of(j)}, source="auth", org_id=org_of(j)
            )
            pipe.xadd(stream, encode(event))  # type: ignore[arg-type]
        await pipe.execute()
    want = total_before + len(picks)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        groups = {g["name"]: g for g in await redis.xinfo_groups(stream)}
        g = groups.get(GROUP)
        if g and int(g["pending"]) == 0 and int(g.get("entries-read") or 0) >= want and not g.get("lag"):
            return len(picks) / (time.perf_counter() - t0)
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the notification group did not drain {len(picks)} events within 600 s")


async def delivery_states(mongo_url: str) -> dict[str, int]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        deliveries = client[DB][DELIVERIES]
        counts = {st.value: await count(deliveries, by_index({"state": st.value})) for st in DeliveryState}
    finally:
        await client.close()
    return {k: v for k, v in counts.items() if v}


async def group_exists(redis: Redis, stream: str) -> bool:
    if not await redis.exists(stream):
        return False
    return any(g["name"] == GROUP for g in await redis.xinfo_groups(stream))


async def dead_letters(redis: Redis, namespace: str) -> int:
    total = 0
    async for key in redis.scan_iter(match=f"{namespace}:*dead*"):
        if await redis.type(key) == "stream":
            total += int(await redis.xlen(key))
    return total


async def run(args: argparse.Namespace) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="notification-bench-"))
    redis_port, mongo_port = free_port(), free_port()
    servers = [redis_server(redis_port, tmp / "redis").start(), mongo_server(mongo_port, tmp / "mongo").start()]
    namespace = "bench" + uuid.uuid4().hex[:8]
    redis_url, mongo_url = f"redis://127.0.0.1:{redis_port}/0", f"mongodb://127.0.0.1:{mongo_port}"
    http_port, worker_port = free_port(), free_port()
    env = dict(os.environ)
    env.update(
        {
            "REDIS_URL": redis_url,
            "MONGO_URL": mongo_url,
            "MONGO_DB": DB,
            "EVENTS_NAMESPACE": namespace,
            "MAIL_CATCHER_DIR": str(tmp / "mail"),
            "MAIL_CATCHER_PORT": "0",
            "LOG_LEVEL": "WARNING",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(http_port),
            "WORKER_HTTP_PORT": str(worker_port),
        }
    )
    redis = Redis.from_url(redis_url, decode_responses=True)
    stream = f"{namespace}:events:auth"
    worker: subprocess.Popen[bytes] | None = None
    try:
        seeded = await seed_projection(mongo_url, 0, args.small)
        print(f"# seeded {args.small:,} projected users in {seeded:.1f} s", file=sys.stderr, flush=True)
        with open(tmp / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "novapulse_notification", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not port_open(worker_port):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start:\n{(tmp / 'worker.log').read_text()[-3000:]}")
            await asyncio.sleep(0.1)
        while not await group_exists(redis, stream):
            if time.monotonic() > deadline:
                raise SystemExit("the worker's consumer group did not appear")
            await asyncio.sleep(0.1)
        total = 0
        warm = list(range(0, min(args.small, 20)))
        await handled_rate(redis, stream, warm, total)
        total += len(warm)
        rates: dict[str, list[float]] = {"small": [], "large": []}
        cpu: dict[str, list[tuple[float, float]]] = {"small": [], "large": []}  # ms per event: worker, storage
        storage_pid = servers[1].proc.pid if servers[1].proc else None
        for case, users in (("small", args.small), ("large", args.large)):
            if case == "large":
                seeded = await seed_projection(mongo_url, args.small, args.large - args.small)
                print(f"# seeded {args.large - args.small:,} more in {seeded:.1f} s", file=sys.stderr, flush=True)
            step = max(1, users // (args.events * args.rounds))
            for r in range(args.rounds):
                picks = [((r * args.events + k) * step + 20) % users for k in range(args.events)]
                before = cpu_seconds(worker.pid), cpu_seconds(storage_pid)
                rates[case].append(await handled_rate(redis, stream, picks, total))
                after = cpu_seconds(worker.pid), cpu_seconds(storage_pid)
                cpu[case].append(
                    (1000 * (after[0] - before[0]) / len(picks), 1000 * (after[1] - before[1]) / len(picks))
                )
                total += len(picks)
        dead = await dead_letters(redis, namespace)
        states = await delivery_states(mongo_url)
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        await redis.aclose()
        for server in servers:
            server.stop()
    small, large = statistics.median(rates["small"]), statistics.median(rates["large"])
    worker_ms = {case: statistics.median(w for w, _ in cpu[case]) for case in cpu}
    storage_ms = {case: statistics.median(st for _, st in cpu[case]) for case in cpu}
    print(f"notification-bench: {os.cpu_count()} CPUs, {args.events} user.password_changed per run (e-mail + in-app)")
    for case, users, med in (("small", args.small, small), ("large", args.large, large)):
        runs = " ".join(f"{x:,.0f}" for x in rates[case])
        print(f"  {users:>9,} users in the projection: {med:,.1f} events/s (median of {args.rounds}; runs {runs})")
        spread = " ".join(f"{w:.1f}/{st:.1f}" for w, st in cpu[case])
        print(
            f"  {'':>9} CPU per event: worker {worker_ms[case]:.1f} ms, storage {storage_ms[case]:.1f} ms "
            f"(medians; runs worker/storage {spread})"
        )
    print(f"  deliveries by state: {states}; dead letters: {dead} (expected 0)")
    print("  target: handling_growth_ratio >= 0.8")
    return (
        f"notification-bench: handled_per_s_small={small:.1f} handled_per_s_large={large:.1f} "
        f"handling_growth_ratio={large / small:.2f} worker_cpu_ms_small={worker_ms['small']:.1f} "
        f"worker_cpu_ms_large={worker_ms['large']:.1f} storage_cpu_ms_small={storage_ms['small']:.1f} "
        f"storage_cpu_ms_large={storage_ms['large']:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.notification", description=__doc__)
    parser.add_argument("--small", type=int, default=int(os.environ.get("BENCH_NOTIFICATION_SMALL", 1000)))
    parser.add_argument("--large", type=int, default=int(os.environ.get("BENCH_NOTIFICATION_LARGE", 100_000)))
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_NOTIFICATION_EVENTS", 300)))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    args = parser.parse_args()
    print(asyncio.run(run(args)), flush=True)


if __name__ == "__main__":
    main()
