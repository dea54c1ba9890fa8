"""``report.requested`` (the workflow service's command) has the API's semantics: a report is made, the
same command again (same ``request_id``) shares it, its ``report.completed`` carries the ``request_id``; a
command the API would refuse is answered at once with one ``report.failed`` (its ``request_id``, a ``code``),
and only one that cannot be answered (no ``request_id``) is dead-lettered, not retried."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from helpers_report import PREFIX, auth_rows, env, finished, seed
from pymongo import AsyncMongoClient

from novapulse_devkit.testing import ServiceProcess, TokenIssuer, start_together, wait_until
from novapulse_report.repository import Repository
from novapulse_runtime.bus import EventBus
from novapulse_runtime.catalog.workflow import ReportRequested
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings

pytestmark = pytest.mark.e2e


async def test_report_requested_command(
    spawn: Callable[..., ServiceProcess],
    token_issuer: TokenIssuer,
    names: str,
    redis_url: str,
    mongo_url: str,
    mongo: AsyncMongoClient[dict[str, Any]],
) -> None:
    settings = token_issuer.env() | env(names)
    api = spawn("novapulse_report", "api", env=settings, start=False)
    worker = spawn("novapulse_report", "worker", env=settings, start=False)
    start_together([api, worker])
    await seed(Repository(mongo[api.env["MONGO_DB"]]), auth_rows("o1", 4))
    command = ReportRequested(
        org_id="o1",
        requested_by="u7",
        type="auth_activity",
        format="ndjson",
        start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 2, 1, tzinfo=UTC),
        time_zone="America/New_York",
        request_id="run-1:step-2",
    )
    rt = Runtime(ServiceSettings(service_name="workflow", redis_url=redis_url, mongo_url=mongo_url), "api")
    try:
        bus = EventBus(rt, namespace=names)
        await bus.publish("report.requested", command, org_id="o1")
        await bus.publish("report.requested", command, org_id="o1")  # the same request again: one report
        bad = command.model_copy(update={"time_zone": "Mars/Olympus", "request_id": "run-1:step-3"})
        await bus.publish("report.requested", bad, org_id="o1")
        await bus.publish("report.requested", bad, org_id="o1")  # refused twice: answered once
        anonymous = bad.model_copy(update={"request_id": ""})
        await bus.publish("report.requested", anonymous, org_id="o1")
        owner = {"Authorization": f"Bearer {token_issuer.mint('u1', 'o1', 'owner')}"}
        async with aiohttp.ClientSession() as http:
            listed: list[Any] = []

            async def listed_one() -> bool:
                nonlocal listed
                async with http.get(api.url + PREFIX, headers=owner) as r:
                    listed = (await r.json())["items"]
                # two identical commands handled at once both store a report; the one that loses the
                # deduplication key deletes its own at once, so the list settles on one
                return len(listed) == 1

            await wait_until(listed_one, timeout=20, message="the commanded report listed")
            body = await finished(http, f"{api.url}{PREFIX}/{listed[0]['id']}", owner)
            assert body["status"] == "succeeded"
            assert body["row_count"] == 4
            assert body["requested_by"] == "u7"
            assert body["format"] == "ndjson"
            async with http.get(api.url + body["download_url"]) as r:
                assert (await r.text()).splitlines()[0].startswith('{"time":"2025-12-31T19:00:00.000-05:00"')

            async def dead_lettered() -> bool:
                entries = await rt.redis.xrange(f"{names}:dead:report")
                return any(f.get("dead_reason") == "rejected" for _, f in entries)

            await wait_until(dead_lettered, timeout=20, message="the unanswerable command dead-lettered")

            answers: list[dict[str, Any]] = []
            failures: list[dict[str, Any]] = []

            async def answered() -> bool:
                nonlocal answers, failures
                entries = await rt.redis.xrange(f"{names}:events:report")
                answers = [json.loads(f["data"]) for _, f in entries if f.get("type") == "report.completed"]
                failures = [json.loads(f["data"]) for _, f in entries if f.get("type") == "report.failed"]
                return bool(answers) and bool(failures)

            # the answer names the command's request, so the workflow step that asked can take it
            await wait_until(answered, timeout=20, message="report.completed and report.failed on the stream")
            assert [(a["report_id"], a["request_id"]) for a in answers] == [(body["id"], "run-1:step-2")]
            assert [(f["request_id"], f["code"]) for f in failures] == [("run-1:step-3", "invalid_parameters")]
            assert "Mars/Olympus" in failures[0]["error"]
            async with http.get(api.url + PREFIX, headers=owner) as r:
                assert len((await r.json())["items"]) == 1
    finally:
        await rt.close()
