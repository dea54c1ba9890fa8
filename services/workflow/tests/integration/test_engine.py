"""The step engine over fake effects and the real MongoDB-wire server: the path of a run, retries then
catch, waits that count events received before they began, and effects redone after a crash keep their
ids."""

from __future__ import annotations

from typing import Any

import pytest
from helpers_workflow import FakeEffects

from novapulse_devkit.testing import wait_until
from novapulse_workflow.engine import Engine, effect_id
from novapulse_workflow.language import Definition, listened_types
from novapulse_workflow.repository import Repository, Run
from novapulse_workflow.triggers import Triggers

pytestmark = pytest.mark.integration

ORG = "o1"


def event(type_: str, data: dict[str, Any], id_: str) -> dict[str, Any]:
    return {"id": id_, "type": type_, "source": "auth", "time": "", "org_id": ORG, "subject": None, "data": data}


async def define(repo: Repository, body: dict[str, Any]) -> str:
    defn = Definition.model_validate(body)
    record = await repo.insert_definition(ORG, "u1", defn.model_dump(mode="json", exclude_none=True), defn.trigger.type)
    return record.id


async def start(repo: Repository, def_id: str, trigger: dict[str, Any]) -> Run:
    body = await repo.get_version(ORG, def_id, 1)
    assert body is not None
    defn = Definition.model_validate(body)
    run = await repo.insert_run(ORG, def_id, 1, trigger, defn.steps[0].key, listened_types(defn))
    assert run is not None
    return run


async def drive(engine: Engine, repo: Repository, run_id: str, timeout: float = 10) -> Run:
    """Claim and advance due runs until ``run_id`` is finished."""

    async def finished() -> bool:
        claimed = await repo.claim_due(engine.owner, engine.lease_ms)
        if claimed is not None:
            await engine.execute(claimed)
        run = await repo.get_run(ORG, run_id)
        return run is not None and run.status in ("completed", "failed", "cancelled")

    await wait_until(finished, timeout=timeout, message=f"run {run_id} finished")
    run = await repo.get_run(ORG, run_id)
    assert run is not None
    return run


WELCOME = {
    "name": "Welcome",
    "trigger": {"type": "user.registered"},
    "steps": [
        {"key": "hello", "type": "notify", "template": "workflow_notice", "user_id": "${trigger.data.user_id}"},
        {"key": "pause", "type": "delay", "seconds": 0.3},
        {
            "key": "branch",
            "type": "condition",
            "branches": [{"when": "trigger.data.role == 'owner'", "next": "tell"}],
            "default": "end",
        },
        {"key": "tell", "type": "emit", "event_type": "customer.onboarded", "data": {"u": "${steps.hello.inputs}"}},
    ],
}


async def test_notify_delay_branch_emit(repo: Repository, effects: FakeEffects) -> None:
    engine = Engine(repo, effects, "w1", 5000)
    def_id = await define(repo, WELCOME)
    run = await start(repo, def_id, event("user.registered", {"user_id": "u7", "role": "owner"}, "e1"))
    done = await drive(engine, repo, run.id)
    assert done.status == "completed"
    assert effects.types() == [
        "workflow.run.started",
        "notification.requested",
        "workflow.emitted",
        "workflow.run.completed",
    ]
    assert effects.published[1][2]["user_id"] == "u7"
    assert effects.published[2][2]["data"] == {"u": {"user_id": "u7", "data": {}}}
    journal = await repo.journal_of(run.id)
    assert [(a.key, a.status) for a in journal] == [
        ("hello", "completed"),
        ("pause", "completed"),
        ("branch", "completed"),
        ("tell", "completed"),
    ]
    assert journal[1].output["fired_ms"] >= journal[1].output["due_ms"]
    # the other branch: a member ends at the condition
    effects.published.clear()
    other = await start(repo, def_id, event("user.registered", {"user_id": "u8", "role": "member"}, "e2"))
    assert (await drive(engine, repo, other.id)).status == "completed"
    assert "workflow.emitted" not in effects.types()


async def test_failing_step_is_retried_per_policy_then_caught(repo: Repository, effects: FakeEffects) -> None:
    engine = Engine(repo, effects, "w1", 5000)
    body = {
        "name": "Retry",
        "trigger": {"type": "user.registered"},
        "steps": [
            {
                "key": "boom",
                "type": "emit",
                "event_type": "app.boom",
                "data": {"n": "${abs(trigger.data.user_id)}"},  # a function given a string: fails every time
                "retry": {"max_attempts": 3, "initial_interval_seconds": 0.05, "backoff_rate": 2},
                "catch": {"next": "after"},
            },
            {"key": "after", "type": "emit", "event_type": "app.caught", "data": {}},
        ],
    }
    run = await start(repo, await define(repo, body), event("user.registered", {"user_id": "u1"}, "e1"))
    done = await drive(engine, repo, run.id)
    assert done.status == "completed"
    journal = await repo.journal_of(run.id)
    assert [(a.key, a.attempt, a.status) for a in journal] == [
        ("boom", 1, "failed"),
        ("boom", 2, "failed"),
        ("boom", 3, "failed"),
        ("after", 1, "completed"),
    ]
    assert "abs()" in journal[0].error
    assert journal[1].started_ms - journal[0].finished_ms >= 40  # the backoff was kept
    # without catch the run fails with the step's error
    body["steps"][0].pop("catch")
    body["steps"][0]["retry"] = {"max_attempts": 1}
    failing = await start(repo, await define(repo, body), event("user.registered", {"user_id": "u1"}, "e2"))
    failed = await drive(engine, repo, failing.id)
    assert failed.status == "failed"
    assert "abs()" in failed.error
    assert effects.types()[-1] == "workflow.run.failed"


async def test_a_wait_counts_an_event_that_came_before_it_began(repo: Repository, effects: FakeEffects) -> None:
    engine = Engine(repo, effects, "w1", 5000)
    body = {
        "name": "Wait",
        "trigger": {"type": "user.registered"},
        "steps": [
            {"key": "pause", "type": "delay", "seconds": 0.2},
            {
                "key": "mfa",
                "type": "wait_for_event",
                "event_type": "mfa.enabled",
                "match": "event.data.user_id == trigger.data.user_id",
                "wait_seconds": 30,
            },
        ],
    }
    def_id = await define(repo, body)
    triggers = Triggers(repo, effects)
    started = await triggers.on_event(event("user.registered", {"user_id": "u1", "org_id": ORG}, "e1"))
    assert len(started) == 1
    assert await triggers.on_event(event("user.registered", {"user_id": "u1", "org_id": ORG}, "e1")) == []  # again
    run = started[0]
    assert run.definition_id == def_id
    claimed = await repo.claim_due("w1", 5000)
    assert claimed is not None
    await engine.execute(claimed)  # now on the delay, before the wait began
    await triggers.on_event(event("mfa.enabled", {"user_id": "other", "org_id": ORG}, "e2"))  # does not match
    await triggers.on_event(event("mfa.enabled", {"user_id": "u1", "org_id": ORG}, "e3"))
    done = await drive(engine, repo, run.id)
    assert done.status == "completed"
    journal = await repo.journal_of(run.id)
    assert journal[-1].output["event"]["id"] == "e3"


async def test_an_effect_redone_after_a_crash_keeps_its_id(repo: Repository, effects: FakeEffects) -> None:
    def_id = await define(repo, WELCOME)
    run = await start(repo, def_id, event("user.registered", {"user_id": "u7", "role": "owner"}, "e1"))
    crashing = Engine(repo, effects, "dead", 200)
    claimed = await repo.claim_due("dead", 200)
    assert claimed is not None
    effects.crash_after = {"notification.requested"}  # the worker "dies" right after the notify effect
    with pytest.raises(RuntimeError):
        await crashing.execute(claimed)
    survivor = Engine(repo, effects, "w2", 5000)
    # the dead worker's lease runs out (200 ms) and the survivor takes the run over
    await wait_until(lambda: _claim_and_run(repo, survivor), timeout=10, message="taken over")
    done = await drive(survivor, repo, run.id)
    assert done.status == "completed"
    ids = [i for i, t, _ in effects.published if t == "notification.requested"]
    assert len(ids) == 2
    assert ids[0] == ids[1] == effect_id(run.id, run.created_ms, "hello", 0)
    assert len({i for i, _, _ in effects.published}) == 4  # started, notify, emitted, completed


async def _claim_and_run(repo: Repository, engine: Engine) -> bool:
    claimed = await repo.claim_due(engine.owner, engine.lease_ms)
    if claimed is None:
        return False
    await engine.execute(claimed)
    return True


async def test_cancel_on_a_matching_event(repo: Repository, effects: FakeEffects) -> None:
    engine = Engine(repo, effects, "w1", 5000)
    body = {
        "name": "Cancellable",
        "trigger": {"type": "user.registered"},
        "cancel_on": [{"event_type": "user.disabled", "match": "event.data.user_id == trigger.data.user_id"}],
        "steps": [
            {"key": "pause", "type": "delay", "seconds": 600},
            {"key": "tell", "type": "emit", "event_type": "app.told", "data": {}},
        ],
    }
    await define(repo, body)
    triggers = Triggers(repo, effects)
    [run] = await triggers.on_event(event("user.registered", {"user_id": "u1", "org_id": ORG}, "e1"))
    claimed = await repo.claim_due("w1", 5000)
    assert claimed is not None
    await engine.execute(claimed)
    await triggers.on_event(event("user.disabled", {"user_id": "someone-else", "org_id": ORG}, "e2"))
    still = await repo.get_run(ORG, run.id)
    assert still is not None
    assert still.status == "waiting"
    await triggers.on_event(event("user.disabled", {"user_id": "u1", "org_id": ORG}, "e3"))
    cancelled = await repo.get_run(ORG, run.id)
    assert cancelled is not None
    assert cancelled.status == "cancelled"
    assert "e3" in cancelled.error
    assert effects.published[-1][1] == "workflow.run.failed"
    assert effects.published[-1][2]["cancelled"] is True
    assert "workflow.emitted" not in effects.types()
