"""A ``report.requested`` the service refuses is answered with one ``report.failed`` (its ``request_id``, a
``code``, the reason) through the real outbox, Redis and MongoDB-wire server; a redelivery answers nothing new;
only a command that cannot be answered is dead-lettered (``PermanentError``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from helpers_report import auth_rows, seed

from novapulse_report.datasets import DataSets
from novapulse_report.filestore import GridFsStore
from novapulse_report.handlers import handlers
from novapulse_report.refusals import Refusals
from novapulse_report.reports import Limits, ReportService
from novapulse_report.repository import Repository
from novapulse_report.signing import LinkSigner
from novapulse_runtime.bus import Event, EventBus, PermanentError
from novapulse_runtime.catalog.workflow import ReportRequested
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings

pytestmark = pytest.mark.integration


def command(request_id: str, **changes: Any) -> ReportRequested:
    base = ReportRequested(
        org_id="o1",
        requested_by="u7",
        type="auth_activity",
        format="csv",
        start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 2, 1, tzinfo=UTC),
        request_id=request_id,
    )
    return base.model_copy(update=changes)


def delivery(event_id: str, data: ReportRequested | dict[str, Any]) -> Event:
    return Event(
        id=event_id, type="report.requested", source="workflow", time=datetime.now(UTC), data=data, org_id="o1"
    )


async def test_a_refused_command_is_answered_once_with_report_failed(
    names: str, redis_url: str, mongo_url: str
) -> None:
    settings = ServiceSettings(service_name="report", redis_url=redis_url, mongo_url=mongo_url, mongo_db=names)
    rt = Runtime(settings, "worker")
    try:
        bus = EventBus(rt, namespace=names)
        outbox = bus.outbox()
        repo = Repository(rt.db)
        await repo.ensure_indexes()
        await seed(repo, auth_rows("o1", 5))
        limits = Limits(max_in_flight=5, max_rows=3, max_bytes=10**9, max_range_days=400, dedup_window_ms=60_000)
        reports = ReportService(repo, GridFsStore(rt.db), LinkSigner(b"k" * 32), limits)
        on_requested = handlers(DataSets(repo), reports, Refusals(repo, outbox))["report.requested"]
        refused = {
            "rq-zone": command("rq-zone", time_zone="Mars/Olympus"),
            "rq-type": command("rq-type", type="no_such_report"),
            "rq-rows": command("rq-rows"),  # 5 rows, at most 3
        }
        for i, data in enumerate(refused.values()):
            await on_requested(delivery(f"ev-{i}", data))
        # at least once: every command delivered again, to this worker or another, answers nothing new
        for i, data in enumerate(refused.values()):
            await on_requested(delivery(f"ev-{i}", data))
        while await outbox.relay_once():
            pass
        for i, data in enumerate(refused.values()):
            await on_requested(delivery(f"ev-{i}", data))  # after the relay too
        assert await outbox.relay_once() == 0

        entries = await rt.redis.xrange(f"{names}:events:report")
        answers = [(f["type"], json.loads(f["data"])) for _, f in entries]
        assert [t for t, _ in answers] == ["report.failed"] * 3
        by_request = {a["request_id"]: a for _, a in answers}
        assert sorted(by_request) == sorted(refused)
        assert by_request["rq-zone"]["code"] == "invalid_parameters"
        assert "Mars/Olympus" in by_request["rq-zone"]["error"]
        assert by_request["rq-type"]["code"] == "invalid_parameters"
        assert "no_such_report" in by_request["rq-type"]["error"]
        assert by_request["rq-rows"]["code"] == "too_many_rows"
        assert "5 rows" in by_request["rq-rows"]["error"]
        assert {a["report_id"] for a in by_request.values()} == {""}  # no report was made
        assert await repo.reports.count_documents({}) == 0

        # what cannot be answered is dead-lettered at once
        with pytest.raises(PermanentError):
            await on_requested(delivery("ev-9", command("", time_zone="Mars/Olympus")))  # nothing to correlate
        with pytest.raises(PermanentError):
            await on_requested(delivery("ev-10", command("rq-x", org_id="")))
        with pytest.raises(PermanentError):
            await on_requested(delivery("ev-11", {"org_id": "o1", "type": "auth_activity"}))
        assert await outbox.relay_once() == 0

        # a command the service accepts still makes a report and answers nothing yet
        await on_requested(delivery("ev-12", command("rq-ok", end=datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC))))
        assert await repo.reports.count_documents({"request_id": "rq-ok"}) == 1
        assert await outbox.relay_once() == 0
    finally:
        await rt.close()
