"""Kill -9 of the worker *during a step* (api and worker as processes, real Redis and MongoDB-wire server):
the worker is frozen (SIGSTOP) until a run is caught between an effect and its journal entry — its
``emit`` event written (outbox or stream) under the attempt's effect id, the attempt not journaled — and
then killed. A new worker finishes every run once, and each effect went out under one id only (counted by
id at the consumer's end, the stream)."""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from helpers_workflow import stream_events
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from novapulse_devkit.testing import ServiceProcess, TokenIssuer, start_together, wait_until
from novapulse_runtime.bus.outbox import OUTBOX_COLLECTION
from novapulse_workflow.engine import effect_id

pytestmark = pytest.mark.e2e

PREFIX = "/api/v1/workflows"
RUNS = 12
STEPS = ("one", "two", "three")
THREE_EMITS: dict[str, Any] = {
    "name": "Three emits",
    "trigger": {"type": "manual"},
    "steps": [
        {"key": key, "type": "emit", "event_type": "app.told", "data": {"n": "${trigger.data.n}", "step": key}}
        for key in STEPS
    ],
}


async def test_kill9_during_a_step_repeats_no_effect(
    spawn: Callable[..., ServiceProcess], token_issuer: TokenIssuer, names: str, redis_url: str, mongo_url: str
) -> None:
    env = token_issuer.env() | {"EVENTS_NAMESPACE": names, "RUN_LEASE_SECONDS": "1", "POLL_INTERVAL_SECONDS": "0.05"}
    api = spawn("novapulse_workflow", "api", env=env, start=False)
    worker = spawn("novapulse_workflow", "worker", env=env, start=False)
    start_together([api, worker])
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    db = client[api.env["MONGO_DB"]]
    headers = {"Authorization": f"Bearer {token_issuer.mint('u1', 'o1', 'owner')}"}
    caught: tuple[str, str, str] | None = None  # (run id, step key, effect id) frozen mid-step
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(api.url + PREFIX + "/definitions", json=THREE_EMITS) as r:
                assert r.status == 201, await r.text()
                def_id = (await r.json())["id"]
            for n in range(RUNS):
                async with http.post(f"{api.url}{PREFIX}/definitions/{def_id}/trigger", json={"data": {"n": n}}) as r:
                    assert r.status == 202, await r.text()

            async def frozen_mid_step() -> bool:
                nonlocal caught
                worker.signal(signal.SIGSTOP)
                on_stream = {i for i, _ in await stream_events(redis_url, names)}
                async for run in db["runs"].find({"status": "running", "step": {"$in": list(STEPS)}}):
                    eid = effect_id(run["_id"], int(run["created_ms"]), run["step"], int(run["gen"]))
                    written = eid in on_stream or await db[OUTBOX_COLLECTION].find_one({"_id": eid}) is not None
                    journaled = await db["journal"].find_one({"_id": f"{run['_id']}:{int(run['gen']):06d}"})
                    if written and journaled is None:
                        caught = (run["_id"], run["step"], eid)
                        return True
                worker.signal(signal.SIGCONT)
                return False

            await wait_until(frozen_mid_step, timeout=60, interval=0.02, message="the worker frozen mid-step")
            worker.signal(signal.SIGKILL)
            assert worker.wait(10) == -signal.SIGKILL
            spawn("novapulse_workflow", "worker", env=env)

            async def all_completed() -> bool:
                return await db["runs"].count_documents({"status": "completed"}) == RUNS

            await wait_until(all_completed, timeout=60, message="every run completed after the kill")

            async def relayed() -> bool:
                events = await stream_events(redis_url, names)
                return sum(1 for _, t in events if t == "workflow.run.completed") >= RUNS

            await wait_until(relayed, timeout=30, message="every run's events on the stream")
        assert caught is not None
        run_id, step, eid = caught
        # count the effects by id at the consumer's end: every (run, step) went out under exactly one id
        journal = await db["journal"].find({"run_id": run_id}).to_list()
        left = {r["_id"] async for r in db["runs"].find({"status": {"$ne": "completed"}})}
    finally:
        await client.close()
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = await redis.xrange(f"{names}:events:workflow")
    finally:
        await redis.aclose()
    ids_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for _, fields in entries:
        if fields["type"] == "workflow.emitted":
            data = json.loads(fields["data"])
            ids_of[(data["run_id"], data["step"])].add(fields["id"])
    assert len(ids_of) == RUNS * len(STEPS)
    assert all(len(ids) == 1 for ids in ids_of.values()), {k: v for k, v in ids_of.items() if len(v) > 1}
    # the step caught mid-way was finished by the new worker under the same effect id
    assert ids_of[(run_id, step)] == {eid}
    assert {(j["key"], j["status"], j["effect_id"]) for j in journal if j["key"] == step} == {(step, "completed", eid)}
    assert left == set()
