"""Every query the worker and the read paths send is served by an index on the server in use (issue 15).

The static index audit (``novapulse_devkit.indexaudit``) checks that some declared index *could* serve each query
shape; this asks the server itself (``explain`` of each filter the repository really sent, recorded with a
pymongo command listener) and fails on a collection scan. On nx-27017 a plain equality (``{"org_id": o}``)
scanned the whole collection (see :func:`novapulse_runtime.documents.by_index`): handling one
``user.password_changed`` slowed 7x with 100k users in the projection.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers_notification import BASE_URL, SENDER, FakeEvent, SmtpSink
from pymongo import AsyncMongoClient, monitoring

from novapulse_notification.mailer import Mailer, SmtpRelay
from novapulse_notification.notifier import Links, Notifier
from novapulse_notification.rendering import Renderer
from novapulse_notification.repository import Repository
from novapulse_runtime.catalog import auth as A

pytestmark = pytest.mark.integration

ORG = "org-1"
FILTERS = {"find": "filter", "findAndModify": "query", "delete": None, "update": None}


class Filters(monitoring.CommandListener):
    """The (collection, filter) of every read and write the client sends."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        cmd = event.command
        name = event.command_name
        if name in ("find", "findAndModify"):
            self.seen.append((str(cmd[name]), dict(cmd.get(FILTERS[name]) or {})))
        elif name in ("update", "delete"):
            for op in cmd.get("updates" if name == "update" else "deletes", []):
                self.seen.append((str(cmd[name]), dict(op.get("q") or {})))
        elif name == "aggregate" and cmd.get("pipeline") and "$match" in cmd["pipeline"][0]:
            self.seen.append((str(cmd[name]), dict(cmd["pipeline"][0]["$match"])))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


def scans(plan: Any, coll: str) -> bool:
    """Whether an ``explain`` plan reads the whole collection: nx-27017 gives SQLite's ``EXPLAIN QUERY PLAN``
    rows (``SCAN users`` vs ``SEARCH users USING INDEX ...``), MongoDB a stage tree (``COLLSCAN``)."""
    if isinstance(plan, list):
        return any(str(row.get("detail", "")).startswith(f"SCAN {coll}") for row in plan)
    if isinstance(plan, dict):
        return plan.get("stage") == "COLLSCAN" or any(
            scans(v, coll) for v in plan.values() if isinstance(v, dict | list)
        )
    return False


async def test_handling_and_reading_notifications_never_scan_a_collection(
    mongo_url: str, names: str, sink: SmtpSink
) -> None:
    filters = Filters()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True, event_listeners=[filters])
    try:
        repo = Repository(client[names])
        await repo.ensure_indexes()
        notifier = Notifier(
            repo,
            Renderer(""),
            Mailer(SmtpRelay("primary", "127.0.0.1", sink.port, timeout=5), None, attempts=1, base_delay=0.01),
            sender=SENDER,
            links=Links(BASE_URL, "/invite/accept"),
        )
        for i in range(3):
            data = A.UserRegistered(
                user_id=f"u{i}", org_id=ORG, email=f"u{i}@example.test", name=f"U {i}", role="owner", organization="O"
            )
            await notifier.handle(FakeEvent("user.registered", data, ORG))
        filters.seen.clear()
        await notifier.handle(FakeEvent("user.password_changed", A.PasswordChanged(user_id="u1", org_id=ORG), ORG))
        await notifier.handle(
            FakeEvent("user.role_changed", A.UserRoleChanged(user_id="u2", org_id=ORG, role="admin", changed_by="u0"))
        )
        await repo.get_preferences(ORG, "u1")
        await repo.list_notices(ORG, "u1", None, 10, unread_only=True)
        await repo.unread_count(ORG, "u1")
        await repo.mark_all_read(ORG, "u1")
        listed = await repo.list_deliveries(ORG, {"channel": "email", "state": "sent"}, None, 10)
        await notifier.take_over_once()  # the sweep every worker runs every SWEEP_INTERVAL_SECONDS
        await repo.renew(ORG, [str(d["_id"]) for d in listed], 15.0, notifier.owner)
        assert {coll for coll, _ in filters.seen} >= {"users", "preferences", "deliveries", "notifications"}
        scanned = []
        for coll, flt in filters.seen:
            plan = (await client[names][coll].find(flt).explain())["queryPlanner"]["winningPlan"]
            if scans(plan, coll):
                scanned.append((coll, flt, plan))
        assert scanned == []
    finally:
        await client.drop_database(names)
        await client.close()
