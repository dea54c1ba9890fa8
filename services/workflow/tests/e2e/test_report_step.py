"""The ``report`` step against the real report service (processes): a registration runs a definition whose
``report`` step asks for the organisation's ``auth_activity`` of the last hour; the report worker makes it
and answers ``report.completed`` with the request's id, and the run completes with the report's id, row
count, checksum and expiry as the step's output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from helpers_workflow import producer

from novapulse_devkit.testing import ServiceProcess, TokenIssuer, start_together, wait_until
from novapulse_runtime.catalog.auth import UserRegistered

pytestmark = pytest.mark.e2e

REPORTING: dict[str, Any] = {
    "name": "Activity report on registration",
    "trigger": {"type": "user.registered"},
    "steps": [
        {
            "key": "rep",
            "type": "report",
            "report_type": "auth_activity",
            "format": "ndjson",
            "requested_by": "${trigger.data.user_id}",
            "last_seconds": 3600,
            "timeout_seconds": 120,
        },
        {"key": "tell", "type": "emit", "event_type": "app.reported", "data": {"id": "${steps.rep.report_id}"}},
    ],
}


async def test_a_report_step_gets_its_report_from_the_report_service(
    spawn: Callable[..., ServiceProcess],
    token_issuer: TokenIssuer,
    names: str,
    redis_url: str,
    mongo_url: str,
) -> None:
    common = token_issuer.env() | {"EVENTS_NAMESPACE": names, "RATE_LIMIT_ENABLED": "false"}
    report_env = common | {
        "REPORT_DOWNLOAD_SECRET": "test-only-report-link-secret-0123456789abcdef",
        "POLL_INTERVAL_SECONDS": "0.05",
        "LEASE_SECONDS": "2",
    }
    report_api = spawn("novapulse_report", "api", env=report_env, start=False)
    report_worker = spawn("novapulse_report", "worker", env=report_env, start=False)
    flow_env = common | {"RUN_LEASE_SECONDS": "2", "POLL_INTERVAL_SECONDS": "0.05"}
    workflow_api = spawn("novapulse_workflow", "api", env=flow_env, start=False)
    workflow_worker = spawn("novapulse_workflow", "worker", env=flow_env, start=False)
    start_together([report_api, report_worker, workflow_api, workflow_worker])
    org = f"org-{names}"
    headers = {"Authorization": f"Bearer {token_issuer.mint('u1', org, 'owner')}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(workflow_api.url + "/api/v1/workflows/definitions", json=REPORTING) as r:
            assert r.status == 201, await r.text()
        async with producer("auth", redis_url, mongo_url, names) as auth:
            await auth.publish(
                "user.registered",
                UserRegistered(
                    user_id="u1", org_id=org, email="ada@example.com", name="Ada", role="owner", organization="A"
                ),
                org_id=org,
            )
        run: dict[str, Any] = {}

        async def finished() -> bool:
            nonlocal run
            async with http.get(workflow_api.url + "/api/v1/workflows/runs") as r:
                items = (await r.json())["items"]
            if not items or items[0]["status"] not in ("completed", "failed"):
                return False
            async with http.get(f"{workflow_api.url}/api/v1/workflows/runs/{items[0]['id']}") as r:
                run = await r.json()
            return True

        await wait_until(
            finished, timeout=90, interval=0.2, message=f"run finished; worker log:\n{workflow_worker.logs()[-3000:]}"
        )
        assert run["status"] == "completed", run
        rep = next(a for a in run["timeline"] if a["key"] == "rep")
        output = rep["output"]
        assert output["request_id"] == rep["effect_id"]
        assert len(output["sha256"]) == 64
        assert output["expires_at"]
        async with http.get(f"{report_api.url}/api/v1/reports/{output['report_id']}") as r:
            assert r.status == 200, await r.text()
            report = await r.json()
        assert report["status"] == "succeeded"
        assert report["row_count"] == output["row_count"]
        assert report["requested_by"] == "u1"


REFUSED: dict[str, Any] = {
    "name": "Report the service refuses",
    "trigger": {"type": "user.registered"},
    "steps": [
        {
            "key": "rep",
            "type": "report",
            "report_type": "no_such_report",
            "format": "csv",
            "requested_by": "${trigger.data.user_id}",
            "last_seconds": 3600,
            "timeout_seconds": 3600,
            "retry": {"max_attempts": 2, "initial_interval_seconds": 0.1},
            "catch": {"next": "tell"},
        },
        {"key": "tell", "type": "emit", "event_type": "app.report_refused", "data": {}},
    ],
}


async def test_a_report_step_the_report_service_refuses_fails_at_once(
    spawn: Callable[..., ServiceProcess],
    token_issuer: TokenIssuer,
    names: str,
    redis_url: str,
    mongo_url: str,
) -> None:
    """The report service answers the refused command with ``report.failed`` (not a dead letter), so each
    attempt fails within seconds, not at its hour-long timeout, and retry then catch apply."""
    common = token_issuer.env() | {"EVENTS_NAMESPACE": names, "RATE_LIMIT_ENABLED": "false"}
    report_env = common | {
        "REPORT_DOWNLOAD_SECRET": "test-only-report-link-secret-0123456789abcdef",
        "POLL_INTERVAL_SECONDS": "0.05",
    }
    report_worker = spawn("novapulse_report", "worker", env=report_env, start=False)
    flow_env = common | {"RUN_LEASE_SECONDS": "2", "POLL_INTERVAL_SECONDS": "0.05"}
    workflow_api = spawn("novapulse_workflow", "api", env=flow_env, start=False)
    workflow_worker = spawn("novapulse_workflow", "worker", env=flow_env, start=False)
    start_together([report_worker, workflow_api, workflow_worker])
    org = f"org-{names}"
    headers = {"Authorization": f"Bearer {token_issuer.mint('u1', org, 'owner')}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(workflow_api.url + "/api/v1/workflows/definitions", json=REFUSED) as r:
            assert r.status == 201, await r.text()
        async with producer("auth", redis_url, mongo_url, names) as auth:
            await auth.publish(
                "user.registered",
                UserRegistered(
                    user_id="u1", org_id=org, email="ada@example.com", name="Ada", role="owner", organization="A"
                ),
                org_id=org,
            )
        run: dict[str, Any] = {}

        async def finished() -> bool:
            nonlocal run
            async with http.get(workflow_api.url + "/api/v1/workflows/runs") as r:
                items = (await r.json())["items"]
            if not items or items[0]["status"] not in ("completed", "failed"):
                return False
            async with http.get(f"{workflow_api.url}/api/v1/workflows/runs/{items[0]['id']}") as r:
                run = await r.json()
            return True

        # far below the step's 3600 s timeout: the refusal is the answer
        await wait_until(
            finished, timeout=60, interval=0.2, message=f"run finished; worker log:\n{workflow_worker.logs()[-3000:]}"
        )
        assert run["status"] == "completed", run
        attempts = [a for a in run["timeline"] if a["key"] == "rep"]
        assert [a["status"] for a in attempts] == ["failed", "failed"], attempts
        assert all("no_such_report" in a["error"] for a in attempts), attempts
        assert [a["key"] for a in run["timeline"]][-1] == "tell"
