"""Workflow and report pages in a real browser: a definition written as JSON (a fault shown with its JSON
path first), dry-run, run now and the run's timeline; a report requested with the type picker, its progress
followed live (htmx) and the file downloaded through the console. axe-core check and screenshots of each
page."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from helpers_console import check_accessibility, path_of, screenshot
from playwright.sync_api import Page, expect

DEFINITION = {
    "name": "Greeter",
    "trigger": {"type": "manual"},
    "steps": [
        {"key": "greet", "type": "emit", "event_type": "customer.greeted", "data": {"who": "${trigger.data.who}"}},
        {"key": "pause", "type": "delay", "seconds": 0.2},
    ],
}


def main_nav(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()


def test_workflow_definition_dry_run_run_now_and_timeline(signed_in_page: Callable[..., Any]) -> None:
    owner = signed_in_page()
    page: Page = owner.page
    page.on("dialog", lambda dialog: dialog.accept())
    main_nav(page, "Workflows")
    assert path_of(page) == "/workflows"
    check_accessibility(page)
    screenshot(page, "workflows")

    page.get_by_role("button", name="New definition").click()
    faulty = json.loads(json.dumps(DEFINITION))
    faulty["steps"][0]["key"] = "end"
    page.get_by_label("Definition (JSON").fill(json.dumps(faulty, indent=2))
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#faults")).to_contain_text("$.steps.0.key")
    check_accessibility(page)
    screenshot(page, "workflow-definition-faults")

    page.get_by_label("Definition (JSON").fill(json.dumps(DEFINITION, indent=2))
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved as version 1.")
    page.get_by_label("Sample trigger event").fill('{"data": {"who": "ann"}}')
    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#dry-run-result")).to_contain_text("the trigger filter passes")
    check_accessibility(page)
    screenshot(page, "workflow-definition")

    page.get_by_role("button", name="Run now").click()
    assert path_of(page).startswith("/workflows/runs/")
    deadline = time.monotonic() + 30
    while "completed" not in page.inner_text("#run-status"):
        assert time.monotonic() < deadline, "the run never completed"
        time.sleep(0.3)
        page.reload()
    expect(page.locator("main")).to_contain_text("greet")
    page.get_by_text("output").first.click()
    check_accessibility(page)
    screenshot(page, "workflow-run")

    page.get_by_role("link", name="Runs").click()
    expect(page.locator("main")).to_contain_text("completed")
    check_accessibility(page)
    screenshot(page, "workflow-runs")


def test_report_requested_progress_and_download(signed_in_page: Callable[..., Any]) -> None:
    owner = signed_in_page()
    page: Page = owner.page
    main_nav(page, "Reports")
    assert path_of(page) == "/reports"
    check_accessibility(page)
    screenshot(page, "reports")

    page.get_by_label("Type").first.select_option("auth_activity")
    page.get_by_label("Format").select_option("csv")
    page.get_by_label("From (UTC, included)").fill(time.strftime("%Y-%m-%dT00:00", time.gmtime(time.time() - 86400)))
    page.get_by_label("To (UTC, excluded)").fill(time.strftime("%Y-%m-%dT23:59", time.gmtime()))
    page.get_by_role("button", name="Request").click()
    assert path_of(page).startswith("/reports/")
    expect(page.locator("#report-status")).to_contain_text("succeeded", timeout=60_000)  # htmx polls it
    check_accessibility(page)
    screenshot(page, "report")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download").click()
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    assert download.failure() is None
