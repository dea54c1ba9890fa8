"""The data sets on the real MongoDB-wire server: workflow run events become ``workflow_runs`` rows, the end
row with the run's duration (from the start the report service remembered); the notification service's
delivery outcomes, read from its stream on real Redis, become ``notification_deliveries`` rows; redelivered
events are stored once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pymongo import AsyncMongoClient

from novapulse_devkit.testing import wait_until
from novapulse_report.datasets import DataSets
from novapulse_report.handlers import handlers
from novapulse_report.refusals import Refusals
from novapulse_report.report_types import REPORT_TYPES
from novapulse_report.reports import ReportService
from novapulse_report.repository import Repository
from novapulse_runtime.bus import Event, EventBus
from novapulse_runtime.catalog.notification import NotificationDelivered, NotificationFailed
from novapulse_runtime.catalog.workflow import RunCompleted, RunFailed, RunStarted
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings

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


NOTIFIED = {
    "org_id": "o1",
    "template": "welcome",
    "category": "account",
    "cause_event_id": "cause-1",
    "cause_event_type": "user.registered",
    "created_at": T0,
}


async def test_notification_outcomes_become_delivery_rows(
    mongo: AsyncMongoClient[dict[str, Any]], names: str, redis_url: str, mongo_url: str
) -> None:
    """The notification service's events, published on its stream, are read by the ``report`` group through
    the service's handler table and become ``notification_deliveries`` rows (ids and classes only); a
    redelivered event is stored once."""
    settings = ServiceSettings(service_name="report", redis_url=redis_url, mongo_url=mongo_url)
    rt = Runtime(settings.model_copy(update={"mongo_db": f"{names}_report"}), "worker")
    producer_rt = Runtime(ServiceSettings(service_name="notification", redis_url=redis_url, mongo_url=mongo_url), "api")
    stop = asyncio.Event()
    try:
        repo = Repository(rt.db)
        await repo.ensure_indexes()
        # no report.requested in this test: no report service, no refusals
        table = handlers(DataSets(repo), cast(ReportService, None), cast(Refusals, None))
        consumer = EventBus(rt, namespace=names, tracing=False).consumer(handlers=table)
        assert f"{names}:events:notification" in consumer.streams()
        producer = EventBus(producer_rt, namespace=names, tracing=False)
        delivered = NotificationDelivered(
            delivery_id="d1", channel="email", user_id="u1", attempts=2, delivered_at=T0, **NOTIFIED
        )
        failed = NotificationFailed(
            delivery_id="d2",
            channel="email",
            user_id="",
            attempts=1,
            error_class="rejected",
            smtp_code=550,
            failed_at=T0,
            **NOTIFIED,
        )
        first = await producer.publish("notification.delivered", delivered, subject="d1")
        second = await producer.publish("notification.failed", failed, subject="d2")
        inapp = await producer.publish(
            "notification.delivered", delivered.model_copy(update={"delivery_id": "d3", "channel": "in_app"})
        )
        runner = asyncio.create_task(consumer.run(stop))

        async def three_rows() -> bool:
            return await repo.facts.count_documents({"ds": "notification_deliveries", "org_id": "o1"}) == 3

        await wait_until(three_rows, timeout=15, message="three notification_deliveries rows")
        rows = {d["_id"]: d async for d in repo.facts.find({"ds": "notification_deliveries", "org_id": "o1"})}
        assert rows[first.id]["v_status"] == "sent"
        assert (rows[first.id]["v_channel"], rows[first.id]["v_user_id"]) == ("email", "u1")
        assert (rows[first.id]["v_template"], rows[first.id]["v_category"]) == ("welcome", "account")
        assert (rows[first.id]["v_attempts"], rows[first.id]["v_delivery_id"]) == (2, "d1")
        assert "v_error_class" not in rows[first.id]
        assert rows[second.id]["v_status"] == "failed"
        assert (rows[second.id]["v_error_class"], rows[second.id]["v_smtp_code"]) == ("rejected", 550)
        assert rows[second.id]["v_user_id"] == ""  # a recipient who is not a user: no id, and never an address
        assert rows[inapp.id]["v_channel"] == "in_app"
        assert set(REPORT_TYPES["notification_deliveries"].column_names) >= {
            k.removeprefix("v_") for d in rows.values() for k in d if k.startswith("v_")
        }
        assert await DataSets(repo).record(first) is False  # delivered again: stored once
    finally:
        stop.set()
        if "runner" in locals():
            await asyncio.wait_for(runner, 30)
        await producer_rt.close()
        await rt.close()
