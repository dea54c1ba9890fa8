"""The step engine over fake effects and the real MongoDB-wire server: the path of a run, retries then
catch, waits that count events received before they began, and effects redone after a crash keep their
ids."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers_workflow import FakeEffects

from novapulse_devkit.testing import wait_until
from novapulse_workflow.engine import Engine, effect_id
from novapulse_workflow.language import Definition, listened_types
from novapulse_workflow.repository import NEVER_DUE_MS, Repository, Run
from novapulse_workflow.triggers import ListeningLookup, Triggers

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
    ended = await repo.runs.find_one({"_id": run.id})
    assert ended is not None
    assert (ended["due_ms"], ended["listening"]) == (NEVER_DUE_MS, False)  # out of every claim's range
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
    ended = await repo.runs.find_one({"_id": run.id})
    assert ended is not None
    assert (ended["due_ms"], ended["listening"]) == (NEVER_DUE_MS, False)
    assert effects.published[-1][1] == "workflow.run.failed"
    assert effects.published[-1][2]["cancelled"] is True
    assert "workflow.emitted" not in effects.types()


REPORTING: dict[str, Any] = {
    "name": "Weekly report",
    "trigger": {"type": "user.registered"},
    "steps": [
        {
            "key": "rep",
            "type": "report",
            "report_type": "signups",
            "format": "csv",
            "requested_by": "${trigger.data.user_id}",
            "last_seconds": 604800,
            "filters": {"role": "${trigger.data.role}"},
            "timeout_seconds": 60,
            "retry": {"max_attempts": 2, "initial_interval_seconds": 0.05},
        },
        {"key": "tell", "type": "emit", "event_type": "app.reported", "data": {"id": "${steps.rep.report_id}"}},
    ],
}


def answer(type_: str, request_id: str, id_: str, **data: Any) -> dict[str, Any]:
    """The report service's answer to ``request_id`` as the consumer hands it to the triggers."""
    body = {"report_id": f"rep-{id_}", "org_id": ORG, "requested_by": "u1", "name": "Signups", "format": "csv"}
    return {
        "id": id_,
        "type": type_,
        "source": "report",
        "time": "",
        "org_id": ORG,
        "subject": body["report_id"],
        "data": {**body, "request_id": request_id, **data},
    }


async def test_a_report_step_requests_and_takes_the_matching_answer(repo: Repository, effects: FakeEffects) -> None:
    engine = Engine(repo, effects, "w1", 5000)
    triggers = Triggers(repo, effects)
    run = await start(
        repo, await define(repo, REPORTING), event("user.registered", {"user_id": "u1", "role": "owner"}, "e1")
    )
    claimed = await repo.claim_due("w1", 5000)
    assert claimed is not None
    await engine.execute(claimed)
    [(request_eid, _, sent)] = [p for p in effects.published if p[1] == "report.requested"]
    assert request_eid == sent["request_id"] == effect_id(run.id, run.created_ms, "rep", 0)
    assert (sent["type"], sent["format"], sent["requested_by"], sent["filters"]) == (
        "signups",
        "csv",
        "u1",
        {"role": "owner"},
    )
    assert sent["start"] < sent["end"]
    asleep = await repo.get_run(ORG, run.id)
    assert asleep is not None
    assert asleep.status == "waiting"
    # another request's answer does not wake or complete this run
    await triggers.on_event(answer("report.completed", "someone-else", "r0"))
    assert await repo.claim_due("w1", 5000) is None
    await triggers.on_event(
        answer("report.completed", request_eid, "r1", row_count=12, sha256="ab" * 32, expires_at="2026-12-07T00:00:00Z")
    )
    done = await drive(engine, repo, run.id)
    assert done.status == "completed"
    journal = await repo.journal_of(run.id)
    assert [(a.key, a.status) for a in journal] == [("rep", "completed"), ("tell", "completed")]
    assert journal[0].output == {
        "report_id": "rep-r1",
        "row_count": 12,
        "sha256": "ab" * 32,
        "expires_at": "2026-12-07T00:00:00Z",
        "request_id": request_eid,
    }
    assert journal[0].effect_id == request_eid
    assert effects.published[-2][2]["data"] == {"id": "rep-r1"}
    assert effects.types().count("report.requested") == 1


async def test_a_failed_report_is_retried_with_a_new_request_then_caught(
    repo: Repository, effects: FakeEffects
) -> None:
    engine = Engine(repo, effects, "w1", 5000)
    triggers = Triggers(repo, effects)
    body = {**REPORTING, "steps": [{**REPORTING["steps"][0], "catch": {"next": "end"}}]}
    run = await start(repo, await define(repo, body), event("user.registered", {"user_id": "u1", "role": "x"}, "e1"))

    async def requested(n: int) -> bool:
        claimed = await repo.claim_due("w1", 5000)
        if claimed is not None:
            await engine.execute(claimed)
        return effects.types().count("report.requested") >= n

    await wait_until(lambda: requested(1), timeout=10, message="first request")
    first = effects.published[-1][0]
    await triggers.on_event(answer("report.failed", first, "f1", error="The report would hold too many rows"))
    await wait_until(lambda: requested(2), timeout=10, message="second request")
    second = effects.published[-1][0]
    assert second != first  # a new attempt generation, a new request
    await triggers.on_event(answer("report.failed", second, "f2", error="still too many"))
    done = await drive(engine, repo, run.id)
    assert done.status == "completed"  # caught
    journal = await repo.journal_of(run.id)
    assert [(a.key, a.attempt, a.status) for a in journal] == [("rep", 1, "failed"), ("rep", 2, "failed")]
    assert "too many rows" in journal[0].error


async def test_a_report_step_times_out_and_an_early_answer_counts(repo: Repository, effects: FakeEffects) -> None:
    engine = Engine(repo, effects, "w1", 5000)
    triggers = Triggers(repo, effects)
    step = {**REPORTING["steps"][0], "timeout_seconds": 0.3, "retry": None}
    body = {**REPORTING, "steps": [step]}
    silent = await start(repo, await define(repo, body), event("user.registered", {"user_id": "u1", "role": "a"}, "e1"))
    failed = await drive(engine, repo, silent.id)
    assert failed.status == "failed"
    assert "no answer to the report request within 0.3 s" in failed.error
    # an answer kept before the run sleeps on it (it outran the sleep write) completes the step
    quick = await start(repo, await define(repo, body), event("user.registered", {"user_id": "u2", "role": "a"}, "e2"))
    eid = effect_id(quick.id, quick.created_ms, "rep", 0)
    await triggers.on_event(answer("report.completed", eid, "q1", row_count=1))
    done = await drive(engine, repo, quick.id)
    assert done.status == "completed"
    assert (await repo.journal_of(quick.id))[0].output["report_id"] == "rep-q1"
    assert effects.types().count("report.requested") == 1  # the early answer: no request sent
    # a rendered value of the wrong kind fails the step (a missing filter value is not text)
    bad = await start(repo, await define(repo, body), event("user.registered", {"user_id": "u3"}, "e3"))
    assert "valid string" in (await drive(engine, repo, bad.id)).error


async def test_only_a_run_nobody_advanced_is_claimed_fresh(repo: Repository, effects: FakeEffects) -> None:
    engine = Engine(repo, effects, "w1", 5000)
    run = await start(repo, await define(repo, WELCOME), event("user.registered", {"user_id": "u7"}, "e1"))
    first = await repo.claim_due("w1", 5000)
    assert first is not None
    assert (first.id, first.fresh, first.prior_status) == (run.id, True, "pending")
    await engine.execute(first)  # notify, then asleep on the delay
    again = await drive_one(repo, "w1")
    assert again is not None
    assert again.fresh is False  # its journal has the notify attempt: read it
    # a holder that died after its claim: taken over, not fresh either
    other = await start(repo, await define(repo, WELCOME), event("user.registered", {"user_id": "u8"}, "e2"))
    assert (await repo.claim_due("dead", 1)) is not None

    async def taken_over() -> bool:
        claimed = await repo.claim_due("w2", 5000)
        return claimed is not None and claimed.id == other.id and not claimed.fresh

    await wait_until(taken_over, timeout=10, message="the dead holder's run taken over")


async def drive_one(repo: Repository, owner: str) -> Run | None:
    """The next claim of ``owner``, waiting for the run's delay to end."""
    claimed: Run | None = None

    async def got() -> bool:
        nonlocal claimed
        claimed = await repo.claim_due(owner, 5000)
        return claimed is not None

    await wait_until(got, timeout=10, message="a run due again")
    return claimed


class CountingRepository(Repository):
    """The real repository, counting its looks for listening runs."""

    looks = 0

    async def all_listening_runs(self, org_id: str) -> list[tuple[Run, list[str]]]:
        self.looks += 1
        return await super().all_listening_runs(org_id)


async def test_events_handled_together_share_one_look_for_listening_runs(repo: Repository) -> None:
    counting = CountingRepository(repo.runs.database)
    lookup = ListeningLookup(counting)
    first = await counting.insert_run(ORG, "wd_x", 1, {"id": "t1"}, "s", ["mfa.enabled"])
    assert first is not None
    found = await asyncio.gather(*(lookup.runs(ORG, "mfa.enabled") for _ in range(10)))
    assert [[r.id for r in runs] for runs in found] == [[first.id]] * 10
    assert counting.looks == 1
    assert await lookup.runs(ORG, "user.disabled") == []  # another type: filtered from the same look
    # a run started before an event arrives is seen by it: a later event opens a new look
    second = await counting.insert_run(ORG, "wd_x", 1, {"id": "t2"}, "s", ["mfa.enabled"])
    assert second is not None
    assert {r.id for r in await lookup.runs(ORG, "mfa.enabled")} == {first.id, second.id}
    assert counting.looks == 3
