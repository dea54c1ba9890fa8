"""Child process for the kill -9 tests: ``python -m tests.bus.proc consume|produce ...``.

``consume`` runs a consumer whose handler records each event id in a Redis list; ``produce`` writes users and
their ``user.registered`` events through the outbox, optionally runs the relay and kills itself with SIGKILL
right after the relay's XADD and before it deletes the outbox records.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from novapulse_runtime.bus import Event, EventBus
from novapulse_runtime.catalog.auth import UserRegistered
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings


def runtime(service: str, database: str, concurrency: int = 16) -> Runtime:
    settings = ServiceSettings(
        service_name=service,
        redis_url=os.environ["REDIS_URL"],
        mongo_url=os.environ["MONGO_URL"],
        mongo_db=database,
        queue_concurrency=concurrency,
    )
    return Runtime(settings, role="worker")


async def consume(args: argparse.Namespace) -> None:
    rt = runtime("notification", args.database, args.concurrency)
    bus = EventBus(rt, namespace=args.namespace)
    consumer = bus.consumer(
        args.group, name=args.name, handler_timeout=args.handler_timeout, claim_idle=args.claim_idle
    )

    @consumer.on("user.registered")
    async def handle(event: Event) -> None:
        await asyncio.sleep(args.sleep)
        await rt.redis.rpush(args.record, event.id)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await consumer.run(stop)
    await rt.close()


async def produce(args: argparse.Namespace) -> None:
    rt = runtime("auth", args.database)
    bus = EventBus(rt, namespace=args.namespace)
    outbox = bus.outbox()
    users = rt.db["users"]
    for i in range(args.count):
        async with outbox.transaction() as session:
            await users.insert_one({"_id": f"u{i}", "email": f"u{i}@example.com"}, session=session)
            data = UserRegistered(
                user_id=f"u{i}", org_id="o1", email=f"u{i}@example.com", name="U", role="owner", organization="A"
            )
            await outbox.add("user.registered", data, org_id="o1", subject=f"u{i}", session=session)
    print("written", flush=True)
    if args.relay:
        original = outbox.collection.delete_many

        async def crash(*a: Any, **kw: Any) -> Any:
            os.kill(os.getpid(), signal.SIGKILL)
            return await original(*a, **kw)

        outbox.collection.delete_many = crash  # type: ignore[method-assign]
        await outbox.relay(asyncio.Event())
    else:
        os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["consume", "produce"])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--group", default="notification")
    parser.add_argument("--name", default="")
    parser.add_argument("--record", default="")
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--handler-timeout", type=float, default=1.0)
    parser.add_argument("--claim-idle", type=float, default=2.0)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--relay", action="store_true")
    args = parser.parse_args()
    asyncio.run(consume(args) if args.mode == "consume" else produce(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
