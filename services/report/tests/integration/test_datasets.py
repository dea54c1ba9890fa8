"""The data sets on the real MongoDB-wire server: workflow run events become ``workflow_runs`` rows, the end
row with the run's duration (from the start the report service remembered); redelivered events are stored
once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from novapulse_report.datasets import DataSets
from novapulse_report.repository import Repository
from novapulse_runtime.bus import Event
from novapulse_runtime.catalog.workflow import RunCompleted, RunFailed, RunStarted

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def event(event_id: str, type_: str, data: Any, at: datetime) -> Event:
    return Event(id=event_id, type=type_, source="workflow", time=at, data=data, org_id="o1")


async def test_workflow_runs_rows_with_durations(mongo: AsyncMongoClient[dict[str, Any]], names: str) -> None:
    repo = Repository(mongo[f"{names}_report"])
    await repo.ensure_indexes()
    sets = DataSets(repo)
    ok = {"org_id": "o1", "definition_id": "wf_1", "version": 3}
    events = [
        event("e1", "workflow.run.started", RunStarted(run_id="r1", trigger_event_id="x", **ok), T0),
        event("e2", "workflow.run.started", RunStarted(run_id="r2", trigger_event_id="y", **ok), T0),
        event("e3", "workflow.run.completed", RunCompleted(run_id="r1", **ok), T0 + timedelta(milliseconds=1500)),
        event(
            "e4",
            "workflow.run.failed",
            RunFailed(run_id="r2", step="mail", error="smtp down", **ok),
            T0 + timedelta(seconds=4),
        ),
        event("e5", "workflow.run.failed", RunFailed(run_id="r9", step="s", error="", cancelled=True, **ok), T0),
    ]
    assert [await sets.record(e) for e in events] == [True] * 5
    assert await sets.record(events[2]) is False  # at least once: stored once
    rows = {d["_id"]: d async for d in repo.facts.find({"ds": "workflow_runs", "org_id": "o1"})}
    assert rows["e1"]["v_status"] == "started"
    assert rows["e1"]["v_workflow_id"] == "wf_1@3"
    assert "v_duration_ms" not in rows["e1"]
    assert (rows["e3"]["v_status"], rows["e3"]["v_duration_ms"]) == ("completed", 1500)
    assert (rows["e4"]["v_status"], rows["e4"]["v_duration_ms"]) == ("failed", 4000)
    assert rows["e4"]["v_error"] == "step mail: smtp down"
    assert rows["e5"]["v_status"] == "cancelled"  # its start was never seen: no duration
    assert "v_duration_ms" not in rows["e5"]
    assert await repo.run_starts.count_documents({}) == 0  # remembered starts go with their runs' ends
