"""Flow control over the real MongoDB-wire server: idempotency keys, debounce and concurrency keys."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers_workflow import FakeEffects
from pymongo import AsyncMongoClient

from novapulse_devkit.testing import wait_until
from novapulse_workflow.engine import Engine
from novapulse_workflow.language import Definition
from novapulse_workflow.repository import Repository, RunFilter
from novapulse_workflow.runs import cancel_run
from novapulse_workflow.starting import start_run
from novapulse_workflow.triggers import Triggers

pytestmark = pytest.mark.integration

ORG = "o1"


def event(user: str, id_: str) -> dict[str, Any]:
    return {
        "id": id_,
        "type": "user.registered",
        "source": "auth",
        "time": "",
        "org_id": ORG,
        "subject": None,
        "data": {"user_id": user, "org_id": ORG},
    }


async def define(repo: Repository, flow: dict[str, Any], steps: list[dict[str, Any]] | None = None) -> str:
    defn = Definition.model_validate(
        {
            "name": "Flow",
            "trigger": {"type": "user.registered"},
            "flow": flow,
            "steps": steps or [{"key": "tell", "type": "emit", "event_type": "app.told", "data": {}}],
        }
    )
    record = await repo.insert_definition(ORG, "u", defn.model_dump(mode="json", exclude_none=True), "user.registered")
    return record.id


async def test_an_idempotency_key_starts_one_run_per_window(repo: Repository, effects: FakeEffects) -> None:
    await define(repo, {"idempotency": {"key": "event.data.user_id", "window_seconds": 60}})
    triggers = Triggers(repo, effects)
    assert len(await triggers.on_event(event("u1", "e1"))) == 1
    assert await triggers.on_event(event("u1", "e2")) == []  # same key, another event: held
    assert await triggers.on_event(event("u1", "e1")) == []  # the first event redelivered: no second run
    assert len(await triggers.on_event(event("u2", "e3"))) == 1
    assert len(await repo.list_runs(ORG, RunFilter(), None, 10)) == 2


async def test_debounce_keeps_only_the_last_trigger(repo: Repository, effects: FakeEffects) -> None:
    await define(repo, {"debounce": {"key": "event.data.user_id", "seconds": 0.2}})
    triggers = Triggers(repo, effects)
    for i in range(3):
        await triggers.on_event(event("u1", f"e{i}"))
    runs = await repo.list_runs(ORG, RunFilter(), None, 10)
    assert sorted(r.status for r in runs) == ["cancelled", "cancelled", "pending"]
    last = next(r for r in runs if r.status == "pending")
    assert last.trigger_event_id == "e2"
    engine = Engine(repo, effects, "w1", 5000)

    async def done() -> bool:
        claimed = await repo.claim_due("w1", 5000)
        if claimed is not None:
            await engine.execute(claimed)
        run = await repo.get_run(ORG, last.id)
        return run is not None and run.status == "completed"

    await wait_until(done, timeout=10, message="debounced run completed")
    assert effects.types().count("workflow.emitted") == 1


async def test_debounce_keeps_one_run_when_two_workers_race_on_a_key(
    repo: Repository, effects: FakeEffects, mongo_url: str, names: str
) -> None:
    await define(repo, {"debounce": {"key": "event.data.user_id", "seconds": 600}})
    # a second worker: its own client (connection pool) on the same database
    other: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    try:
        workers = [Triggers(repo, effects), Triggers(Repository(other[names]), FakeEffects())]
        for round_ in range(5):
            batch = [event("u1", f"r{round_}e{i}") for i in range(8)]
            await asyncio.gather(*(workers[i % 2].on_event(e) for i, e in enumerate(batch)))
            runs = await repo.list_runs(ORG, RunFilter(), None, 100)
            pending = [r for r in runs if r.status == "pending"]
            assert len(pending) == 1, [(r.trigger_event_id, r.status) for r in runs]
            assert {r.status for r in runs} == {"pending", "cancelled"}
            assert len(runs) == 8 * (round_ + 1)
        # the survivor's trigger redelivered (to either worker) starts nothing and cancels nothing
        [survivor] = [r for r in await repo.list_runs(ORG, RunFilter(), None, 100) if r.status == "pending"]
        await asyncio.gather(*(w.on_event(event("u1", survivor.trigger_event_id)) for w in workers))
        runs = await repo.list_runs(ORG, RunFilter(), None, 100)
        assert [r.id for r in runs if r.status == "pending"] == [survivor.id]
        assert len(runs) == 40
    finally:
        await other.close()


async def test_a_redelivered_trigger_repairs_a_debounce_interrupted_after_the_insert(repo: Repository) -> None:
    def_id = await define(repo, {"debounce": {"key": "event.data.user_id", "seconds": 600}})
    defn = Definition.model_validate((await repo.get_version(ORG, def_id, 1)) or {})
    [first] = await Triggers(repo, FakeEffects()).on_event(event("u1", "e1"))
    # a worker numbered and inserted e2's run, then died before making it current
    seq = await repo.next_debounce_seq(f"{def_id}:u1")
    orphan = await repo.insert_run(
        ORG, def_id, 1, event("u1", "e2"), defn.steps[0].key, [],
        trigger_key=f"{def_id}:e2", delay_ms=600_000, debounce_key=f"{def_id}:u1", debounce_seq=seq,
    )  # fmt: skip
    assert orphan is not None
    assert await start_run(repo, def_id, 1, defn, event("u1", "e2")) is None  # e2 redelivered
    states = {r.id: r.status for r in await repo.list_runs(ORG, RunFilter(), None, 10)}
    assert states == {first.id: "cancelled", orphan.id: "pending"}


async def test_a_concurrency_key_holds_the_second_run_until_the_first_ends(
    repo: Repository, effects: FakeEffects
) -> None:
    await define(
        repo,
        {"concurrency": {"key": "event.data.user_id", "limit": 1}},
        [{"key": "pause", "type": "delay", "seconds": 600}],
    )
    triggers = Triggers(repo, effects)
    [first] = await triggers.on_event(event("u1", "e1"))
    [second] = await triggers.on_event(event("u1", "e2"))
    [other] = await triggers.on_event(event("u2", "e3"))
    engine = Engine(repo, effects, "w1", 5000)

    async def claim_all() -> None:
        while (claimed := await repo.claim_due("w1", 5000)) is not None:
            await engine.execute(claimed)

    await claim_all()
    states = {r.id: (r.status, r.started) for r in await repo.list_runs(ORG, RunFilter(), None, 10)}
    assert states[first.id] == ("waiting", True)
    assert states[second.id] == ("pending", False)  # no slot for u1
    assert states[other.id] == ("waiting", True)  # another key has its own slots
    held = await repo.get_run(ORG, first.id)
    assert held is not None
    await cancel_run(repo, effects, held, "cancelled")

    async def second_started() -> bool:
        await claim_all()
        run = await repo.get_run(ORG, second.id)
        return run is not None and run.started

    await wait_until(second_started, timeout=10, message="second run took the freed slot")
