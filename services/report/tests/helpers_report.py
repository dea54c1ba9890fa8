"""Helpers of the report service's end-to-end tests: the environment of its processes, seeding its data
sets, and polling a report to its end."""

from __future__ import annotations

from typing import Any

import aiohttp

from novapulse_devkit.testing import wait_until
from novapulse_report.repository import Fact, Repository

PREFIX = "/api/v1/reports"
SECRET = "test-only-report-link-secret-0123456789abcdef"
JAN = "2026-01-01T00:00:00+00:00"
FEB = "2026-02-01T00:00:00+00:00"
JAN_MS = 1_767_225_600_000


def env(names: str, **more: str) -> dict[str, str]:
    """Settings of a report process in a test: fast polling and leases, small parts."""
    return {
        "EVENTS_NAMESPACE": names,
        "REPORT_DOWNLOAD_SECRET": SECRET,
        "POLL_INTERVAL_SECONDS": "0.05",
        "LEASE_SECONDS": "2",
        "RATE_LIMIT_ENABLED": "false",
        **more,
    }


def auth_rows(org_id: str, count: int, start_ms: int = JAN_MS, step_ms: int = 1000) -> list[Fact]:
    """``count`` rows of the ``auth_activity`` data set, one every ``step_ms`` from ``start_ms``."""
    return [
        Fact(
            f"ev-{org_id}-{i:07d}",
            "auth_activity",
            org_id,
            start_ms + i * step_ms,
            {"event": "mfa.enabled" if i % 4 else "user.login_blocked", "user_id": f"u{i % 50}", "actor_id": "a"},
        )
        for i in range(count)
    ]


async def seed(repo: Repository, facts: list[Fact], batch: int = 5000) -> None:
    for i in range(0, len(facts), batch):
        await repo.add_facts(facts[i : i + batch], 0)


async def finished(http: aiohttp.ClientSession, url: str, headers: dict[str, str], timeout: float = 30) -> Any:
    """Poll the report at ``url`` until it is no longer queued or running; returns its last body."""
    body: Any = {}

    async def done() -> bool:
        nonlocal body
        async with http.get(url, headers=headers) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        return body["status"] not in ("queued", "running")

    await wait_until(done, timeout=timeout, interval=0.05, message=f"report {url} finished")
    return body
