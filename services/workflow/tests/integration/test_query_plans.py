"""Every query the workflow worker and API send is served by an index on the server in use (issue 15).

Records each filter the repository really sends (``novapulse_devkit.queryplans.QueryRecorder``) while runs
are triggered, advanced through a delay and a wait, woken by events and report answers, capped, listed,
cancelled and purged, and asks the server how it answers each one (``queryplans.scanning``): no collection
scan. On nx-27017 a plain equality written by an update (``{"org_id": o, "report_request": r, ...}``) read the
whole ``runs`` collection (145 ms with 50k runs, 0.8 ms as ``$eq``), and ``count_documents`` read every
document whatever its filter (3.6 s): this test fails on those shapes.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers_workflow import FakeEffects

from novapulse_devkit.queryplans import assert_no_scans, recorded_database
from novapulse_devkit.testing import wait_until
from novapulse_workflow.engine import Engine
from novapulse_workflow.language import Definition
from novapulse_workflow.repository import Repository, RunFilter
from novapulse_workflow.triggers import Triggers

pytestmark = pytest.mark.integration

ORG = "o1"
WAITING = {
    "name": "Wait",
    "trigger": {"type": "user.registered"},
    "cancel_on": [{"event_type": "user.disabled", "match": "event.data.user_id == trigger.data.user_id"}],
    "steps": [
        {"key": "hello", "type": "notify", "template": "workflow_notice", "user_id": "${trigger.data.user_id}"},
        {"key": "pause", "type": "delay", "seconds": 0.1},
        {
            "key": "mfa",
            "type": "wait_for_event",
            "event_type": "mfa.enabled",
            "match": "event.data.user_id == trigger.data.user_id",
            "wait_seconds": 30,
        },
    ],
}


def event(type_: str, data: dict[str, Any], id_: str) -> dict[str, Any]:
    return {"id": id_, "type": type_, "source": "auth", "time": "", "org_id": ORG, "subject": None, "data": data}


async def test_the_worker_and_api_queries_never_scan_a_collection(
    mongo_url: str, names: str, effects: FakeEffects
) -> None:
    async with recorded_database(mongo_url, names) as (db, recorder):
        repo = Repository(db)
        await repo.ensure_indexes()
        defn = Definition.model_validate(WAITING)
        record = await repo.insert_definition(
            ORG, "u1", defn.model_dump(mode="json", exclude_none=True), defn.trigger.type
        )
        recorder.clear()

        # the worker: trigger, advance, wait, wake, finish
        engine = Engine(repo, effects, "w1", 5000)
        triggers = Triggers(repo, effects)
        started = await triggers.on_event(event("user.registered", {"user_id": "u1", "org_id": ORG}, "e1"))
        assert len(started) == 1
        run = started[0]

        async def finished() -> bool:
            claimed = await repo.claim_due(engine.owner, engine.lease_ms, skip_orgs=["o9"])
            if claimed is not None:
                await engine.execute(claimed)
            current = await repo.get_run(ORG, run.id)
            if current is not None and current.status == "waiting" and current.step == "mfa":
                await triggers.on_event(event("mfa.enabled", {"user_id": "u1", "org_id": ORG}, "e2"))
            return current is not None and current.status == "completed"

        await wait_until(finished, timeout=20, message="run completed")
        assert await repo.hold_key("k1", "e1", 60_000)
        seq = await repo.next_debounce_seq("d1")
        assert await repo.make_current("d1", seq, run.id) is None
        assert not await repo.cancel_debounced(run.id)
        assert await repo.run_by_trigger_key("none") is None
        assert await repo.take_slot("c1", 2, run.id)
        await repo.free_slots(run.id)
        slot = await repo.take_org_slot(ORG, 2, "w1", 5000)
        assert slot is not None
        await repo.renew_org_slots("w1", 5000)
        await repo.free_org_slots("w1", [slot])
        assert not await repo.renew_lease(run.id, "w1", 5000)
        assert await repo.wake_waiting(ORG, "mfa.enabled") == 0
        assert await repo.listening_runs(ORG, "user.disabled") == []
        await repo.keep_received(run.id, ORG, event("mfa.enabled", {"user_id": "u1"}, "e3"), 10)
        assert await repo.count_received(run.id, "mfa.enabled") >= 1
        assert await repo.received_for(run.id, "mfa.enabled")
        assert not await repo.wake_run(run.id)
        assert not await repo.keep_reply(ORG, "q1", {"id": "e4"})
        assert await repo.reply_for(ORG, "q1") == {"id": "e4"}
        assert await repo.count_active_and_timers() == (0, 0)
        assert await repo.purge_finished(2**53, 10) == 1
        assert await repo.purge_answers_and_posts(0) == 0

        # the API
        assert await repo.count_definitions(ORG) == 1
        assert [d.id for d in await repo.list_definitions(ORG, None, 10)] == [record.id]
        assert await repo.get_definition(ORG, record.id) is not None
        assert await repo.set_enabled(ORG, record.id, True)
        assert await repo.list_runs(ORG, RunFilter(definition_id=record.id, status="completed"), None, 10) == []
        assert await repo.runs_of_event(ORG, "e1", 10) == []
        assert await repo.get_run(ORG, run.id) is None
        assert await repo.cancel_run(ORG, run.id) is None
        await repo.insert_app_event(ORG, {"id": "a1"}, "f", "u1")
        await repo.insert_app_event(ORG, {"id": "a1"}, "f", "u1")
        assert await repo.delete_definition(ORG, record.id)

        colls = {q.coll for q in recorder.queries}
        assert colls >= {"runs", "definitions", "journal", "received", "replies", "slots", "org_slots", "debounces"}
        await assert_no_scans(db, recorder.queries)


async def test_a_conditional_write_takes_only_its_own_document(repo: Repository) -> None:
    """On nx-27017 ``{"_id": k, "$or": [a, b]}`` became ``_id = k AND a OR b``: making the run of debounce
    key ``d2`` current overwrote key ``d1`` (the first document with no ``current_seq``), and ``d1``'s own
    run then went to ``d2`` — the wrong run of each key would have started."""
    for key in ("d1", "d2"):
        assert await repo.next_debounce_seq(key) == 1
    assert await repo.make_current("d2", 1, "run-b") is None
    assert await repo.make_current("d1", 1, "run-a") is None
    docs = {d["_id"]: d async for d in repo.debounces.find({})}
    assert (docs["d1"]["run_id"], docs["d2"]["run_id"]) == ("run-a", "run-b")
    assert (docs["d1"]["current_seq"], docs["d2"]["current_seq"]) == (1, 1)
    assert await repo.hold_key("k1", "e1", 60_000)
    assert await repo.hold_key("k2", "e1", 60_000)  # the same event holds a second key
    keys = {d["_id"]: d async for d in repo.keys.find({})}
    assert set(keys) == {"k1", "k2"}
