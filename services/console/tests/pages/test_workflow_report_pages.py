"""Workflow and report pages over HTTP against real processes.

Workflows: a definition created from JSON (not-JSON and the language's faults shown with their JSON paths),
a dry run, disable/enable, a manual run waiting at a delay, cancelled from its timeline, the definition
edited to version 2 and the run rerun from the delay on the latest version (the first step reused).
Reports: one requested with the type picker, its progress followed, downloaded through the console (the
signed link never reaches the visitor), refused to another organisation, deleted."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime, timedelta

import pytest
from helpers_pages import Api, Browser, own_loop

from novapulse_devkit.testing import wait_until

pytestmark = pytest.mark.e2e

FLOWS = "/api/v1/workflows"
REPORTS = "/api/v1/reports"


def definition(pause: float) -> dict[str, object]:
    return {
        "name": "Greeter",
        "trigger": {"type": "manual"},
        "steps": [
            {"key": "first", "type": "emit", "event_type": "customer.greeted", "data": {"who": "${trigger.data.who}"}},
            {"key": "pause", "type": "delay", "seconds": pause},
        ],
    }


@own_loop
async def test_workflow_definitions_dry_run_runs_timeline_cancel_and_rerun(
    visitor, pages_stack, http, email: str
) -> None:
    b: Browser = await visitor()
    await b.register(email)
    await b.sign_in(email)
    api = await Api.login(http, pages_stack.url("auth-api"), pages_stack.url("workflow-api") + FLOWS, email)

    form = await b.get("/workflows/definitions/new")
    assert form.status == 200
    not_json = await b.post("/workflows/definitions", {"definition": "{oops"}, form)
    assert not_json.status == 422
    assert "is not JSON" in not_json.text
    faulty = definition(60)
    faulty["steps"][0]["key"] = "end"  # type: ignore[index]
    refused = await b.post("/workflows/definitions", {"definition": json.dumps(faulty)}, form)
    assert refused.status == 422
    assert "$.steps.0.key" in refused.by_id("faults")

    created = await b.post("/workflows/definitions", {"definition": json.dumps(definition(60))}, form)
    assert "Saved as version 1." in created.flash()
    definition_id = created.url.rsplit("/", 1)[1]
    assert (await api.ok("GET", f"/definitions/{definition_id}"))["name"] == "Greeter"
    assert "Greeter" in (await b.get("/workflows")).text

    dry = await b.post(
        f"/workflows/definitions/{definition_id}/dry-run", {"sample": '{"data": {"who": "ann"}}'}, created
    )
    assert "the trigger filter passes" in dry.by_id("dry-run-result")
    assert "ann" in dry.text
    assert (await api.ok("GET", "/runs", definition_id=definition_id))["items"] == []  # a dry run does nothing

    await b.post(f"/workflows/definitions/{definition_id}/disable", {}, created)
    assert (await api.ok("GET", f"/definitions/{definition_id}"))["enabled"] is False
    await b.post(f"/workflows/definitions/{definition_id}/enable", {}, created)
    assert (await api.ok("GET", f"/definitions/{definition_id}"))["enabled"] is True

    started = await b.post(
        f"/workflows/definitions/{definition_id}/trigger", {"sample": '{"data": {"who": "bo"}}'}, created
    )
    assert "/workflows/runs/wr" in started.url or "/workflows/runs/" in started.url
    run_id = started.url.rsplit("/", 1)[1]

    async def waiting() -> bool:
        return (await api.ok("GET", f"/runs/{run_id}"))["status"] == "waiting"

    await wait_until(waiting, timeout=30, message="the run waits at the delay")
    timeline = await b.get(f"/workflows/runs/{run_id}")
    assert "waiting" in timeline.by_id("run-status")
    assert "first" in timeline.text
    assert "completed" in timeline.text
    listed = await b.get(f"/workflows/runs?definition_id={definition_id}&status=waiting")
    assert run_id in listed.text
    assert run_id not in (await b.get(f"/workflows/runs?definition_id={definition_id}&status=failed")).text
    assert "not a definition id" in (await b.get("/workflows/runs?definition_id=nope")).text

    cancelled = await b.post(f"/workflows/runs/{run_id}/cancel", {}, timeline)
    assert "The run is cancelled." in cancelled.flash()
    assert (await api.ok("GET", f"/runs/{run_id}"))["status"] == "cancelled"

    edit = await b.get(f"/workflows/definitions/{definition_id}/edit")
    saved = await b.post(
        f"/workflows/definitions/{definition_id}/edit", {"definition": json.dumps(definition(0.1))}, edit
    )
    assert "Saved as version 2." in saved.flash()
    assert f"/workflows/definitions/{definition_id}?version=1" in saved.text
    old = await b.get(f"/workflows/definitions/{definition_id}?version=1")
    assert '"seconds": 60' in html.unescape(old.text)

    rerun = await b.post(f"/workflows/runs/{run_id}/rerun", {"from_step": "pause", "version": "latest"}, cancelled)
    assert "reused: first" in " ".join(rerun.flash())
    new_id = rerun.url.rsplit("/", 1)[1]
    assert new_id != run_id

    async def completed() -> bool:
        return (await api.ok("GET", f"/runs/{new_id}"))["status"] == "completed"

    await wait_until(completed, timeout=30, message="the rerun completes")
    page = await b.get(f"/workflows/runs/{new_id}")
    assert "reused" in page.text
    assert run_id in page.text  # rerun of

    gone = await b.post(f"/workflows/definitions/{definition_id}/delete", {}, saved)
    assert gone.path == "/workflows"
    assert (await api.call("GET", f"/definitions/{definition_id}"))[0] == 404


@own_loop
async def test_report_requested_followed_downloaded_through_the_console_and_deleted(
    visitor, pages_stack, http, email: str
) -> None:
    b: Browser = await visitor()
    await b.register(email)
    await b.sign_in(email)
    api = await Api.login(http, pages_stack.url("auth-api"), pages_stack.url("report-api") + REPORTS, email)

    page = await b.get("/reports")
    assert page.status == 200
    assert 'option value="auth_activity"' in page.text
    now = datetime.now(UTC)
    asked = await b.post(
        "/reports",
        {
            "type": "auth_activity",
            "format": "csv",
            "start": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
            "end": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            "time_zone": "Europe/Paris",
        },
        page,
    )
    assert "/reports/rep" in asked.url or asked.path.startswith("/reports/")
    report_id = asked.url.rsplit("/", 1)[1]
    assert (await api.ok("GET", f"/{report_id}"))["parameters"]["time_zone"] == "Europe/Paris"

    async def succeeded() -> bool:
        fragment = await b.get(f"/reports/{report_id}?fragment=1", **{"HX-Request": "true"})
        assert "<html" not in fragment.text
        return "succeeded" in fragment.by_id("report-status")

    await wait_until(succeeded, timeout=60, message="the report succeeds")
    done = await b.get(f"/reports/{report_id}")
    assert f"/reports/{report_id}/download" in done.text
    assert "sig=" not in done.text  # the signed link stays between the console and the report service

    async with b.http.get(f"{b.base}/reports/{report_id}/download") as resp:
        body = await resp.read()
        assert resp.status == 200
        assert "attachment" in resp.headers["Content-Disposition"]
        assert resp.headers["X-Content-SHA256"] == (await api.ok("GET", f"/{report_id}"))["sha256"]
    assert body

    wrong = await b.post("/reports", {"type": "auth_activity", "format": "csv", "start": "", "end": ""}, page)
    assert wrong.status == 422
    assert "give the time range" in wrong.text
    zone = await b.post(
        "/reports",
        {
            "type": "auth_activity",
            "format": "csv",
            "start": "2026-01-01T00:00",
            "end": "2026-01-02T00:00",
            "time_zone": "Mars/Olympus",
        },
        page,
    )
    assert zone.status == 422

    other: Browser = await visitor()
    await other.register("other-" + email)
    await other.sign_in("other-" + email)
    assert (await other.get(f"/reports/{report_id}")).status == 404
    assert (await other.get(f"/reports/{report_id}/download")).status == 404
    assert report_id not in (await other.get("/reports")).text

    deleted = await b.post(f"/reports/{report_id}/delete", {}, done)
    assert deleted.path == "/reports"
    assert (await api.call("GET", f"/{report_id}"))[0] == 404
