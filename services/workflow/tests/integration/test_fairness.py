"""Fairness: one organisation's flood of due runs does not hold back another organisation's single run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers_workflow import FakeEffects

from novapulse_devkit.testing import wait_until
from novapulse_workflow.engine import Engine
from novapulse_workflow.language import Definition
from novapulse_workflow.repository import Repository, RunFilter
from novapulse_workflow.triggers import Triggers
from novapulse_workflow.worker import Scheduler

pytestmark = pytest.mark.integration

BODY = {
    "name": "Emit",
    "trigger": {"type": "manual"},
    "steps": [{"key": "tell", "type": "emit", "event_type": "app.told", "data": {}}],
}


class GatedEffects(FakeEffects):
    """Effects of organisation ``held`` block until ``gate`` opens (a slow tenant holding its slots)."""

    def __init__(self, held: str) -> None:
        super().__init__()
        self.held = held
        self.gate = asyncio.Event()

    async def publish(self, type_: str, data: dict[str, Any], *, org_id: str, subject: str, event_id: str) -> None:
        if org_id == self.held:
            await self.gate.wait()
        await super().publish(type_, data, org_id=org_id, subject=subject, event_id=event_id)


async def test_a_flooding_org_does_not_hold_back_another(repo: Repository) -> None:
    defn = Definition.model_validate(BODY)
    body = defn.model_dump(mode="json", exclude_none=True)
    flood = await repo.insert_definition("org-a", "u", body, "manual")
    single = await repo.insert_definition("org-b", "u", body, "manual")
    for i in range(12):
        await repo.insert_run("org-a", flood.id, 1, {"id": f"a{i}"}, "tell", [])
    lone = await repo.insert_run("org-b", single.id, 1, {"id": "b0"}, "tell", [])
    assert lone is not None
    effects = GatedEffects("org-a")
    scheduler = Scheduler(repo, Engine(repo, effects, "w1", 30_000), 4, 0.02, slots_per_org=2)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:

        async def lone_done() -> bool:
            run = await repo.get_run("org-b", lone.id)
            return run is not None and run.status == "completed"

        await wait_until(lone_done, timeout=20, message="org B's run completed")
        assert scheduler.in_flight["org-a"] == 2  # org A holds only its share of the slots
        effects.gate.set()

        async def flood_done() -> bool:
            return len(await repo.list_runs("org-a", RunFilter(status="completed"), None, 100)) == 12

        await wait_until(flood_done, timeout=30, message="org A's runs completed")
    finally:
        effects.gate.set()
        stop.set()
        await task


async def test_a_long_step_keeps_its_lease(repo: Repository) -> None:
    defn = Definition.model_validate(BODY)
    record = await repo.insert_definition("org-a", "u", defn.model_dump(mode="json", exclude_none=True), "manual")
    run = await repo.insert_run("org-a", record.id, 1, {"id": "a0"}, "tell", [])
    assert run is not None
    effects = GatedEffects("org-a")
    engine = Engine(repo, effects, "w1", 300)
    claimed = await repo.claim_due("w1", 300)
    assert claimed is not None
    first_lease = (await repo.runs.find_one({"_id": run.id}) or {})["lease_until_ms"]
    task = asyncio.create_task(engine.execute(claimed))
    try:

        async def renewed_twice() -> bool:
            doc = await repo.runs.find_one({"_id": run.id})
            return doc is not None and doc["lease_until_ms"] > first_lease + 300

        await wait_until(renewed_twice, timeout=10, message="lease renewed")
        assert await repo.claim_due("w2", 300) is None  # nobody takes a run whose holder is alive
    finally:
        effects.gate.set()
        await task
    done = await repo.get_run("org-a", run.id)
    assert done is not None
    assert done.status == "completed"


async def test_a_trigger_in_the_process_wakes_the_scheduler(repo: Repository) -> None:
    body = {**BODY, "trigger": {"type": "user.registered"}}
    defn = Definition.model_validate(body)
    await repo.insert_definition("org-a", "u", defn.model_dump(mode="json", exclude_none=True), "user.registered")
    effects = FakeEffects()
    scheduler = Scheduler(repo, Engine(repo, effects, "w1", 5000), 4, 600.0)  # polls only every 10 minutes
    triggers = Triggers(repo, effects, on_start=scheduler.wake)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        await wait_until(lambda: scheduler._wake.is_set() is False, timeout=5, message="scheduler idle")
        [run] = await triggers.on_event(
            {"id": "e1", "type": "user.registered", "source": "auth", "org_id": "org-a", "data": {"user_id": "u"}}
        )

        async def done() -> bool:
            got = await repo.get_run("org-a", run.id)
            return got is not None and got.status == "completed"

        await wait_until(done, timeout=10, message="woken scheduler ran the new run")
    finally:
        stop.set()
        await task


class CountingGate(GatedEffects):
    """``GatedEffects`` that also counts the effects of ``held`` waiting at the gate at once (runs in flight)."""

    def __init__(self, held: str) -> None:
        super().__init__(held)
        self.waiting = 0
        self.most = 0

    async def publish(self, type_: str, data: dict[str, Any], *, org_id: str, subject: str, event_id: str) -> None:
        if org_id == self.held and type_ == "workflow.emitted":
            self.waiting += 1
            self.most = max(self.most, self.waiting)
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1
        await FakeEffects.publish(self, type_, data, org_id=org_id, subject=subject, event_id=event_id)


async def test_the_cap_of_runs_in_flight_holds_across_workers(repo: Repository) -> None:
    defn = Definition.model_validate(BODY)
    body = defn.model_dump(mode="json", exclude_none=True)
    flood = await repo.insert_definition("org-a", "u", body, "manual")
    single = await repo.insert_definition("org-b", "u", body, "manual")
    for i in range(10):
        await repo.insert_run("org-a", flood.id, 1, {"id": f"a{i}"}, "tell", [])
    effects = CountingGate("org-a")
    # two workers (as two processes would be: their own owners, slots and counters), each willing to run
    # 8 runs of one organisation; the global cap is 3
    workers = [
        Scheduler(repo, Engine(repo, effects, f"w{n}", 30_000), 8, 0.02, slots_per_org=8, org_cap=3) for n in (1, 2)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        await wait_until(lambda: effects.waiting == 3, timeout=20, message="three of org A's runs in flight")
        # the cap leaves org B alone
        lone = await repo.insert_run("org-b", single.id, 1, {"id": "b0"}, "tell", [])
        assert lone is not None

        async def lone_done() -> bool:
            run = await repo.get_run("org-b", lone.id)
            return run is not None and run.status == "completed"

        await wait_until(lone_done, timeout=20, message="org B's run completed while org A is at its cap")
        assert effects.waiting == 3
        assert await repo.org_slots.count_documents({"org_id": "org-a", "until_ms": {"$gt": 0}}) == 3
        effects.gate.set()

        async def flood_done() -> bool:
            return len(await repo.list_runs("org-a", RunFilter(status="completed"), None, 100)) == 10

        await wait_until(flood_done, timeout=30, message="org A's runs completed")
        assert effects.most == 3  # never more than the cap at once, across both workers
        assert {r.status for r in await repo.list_runs("org-a", RunFilter(), None, 100)} == {"completed"}
    finally:
        effects.gate.set()
        stop.set()
        await asyncio.gather(*tasks)
    # stopped workers give their slots back
    assert await repo.org_slots.count_documents({"owner": {"$ne": ""}}) == 0


async def test_a_dead_workers_org_slots_are_taken_over(repo: Repository) -> None:
    held = [await repo.take_org_slot("org-a", 2, "dead", 200) for _ in range(2)]
    assert None not in held
    assert await repo.take_org_slot("org-a", 2, "alive", 5000) is None  # both held

    async def taken() -> bool:
        return await repo.take_org_slot("org-a", 2, "alive", 5000) is not None

    await wait_until(taken, timeout=10, message="an expired slot taken over")
