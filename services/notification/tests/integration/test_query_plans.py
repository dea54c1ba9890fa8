"""Every query the worker and the read paths send is served by an index on the server in use (issue 15).

The static index audit (``novapulse_devkit.indexaudit``) checks that some declared index *could* serve each query
shape; this asks the server itself (``novapulse_devkit.queryplans``: each filter the repository really sent,
recorded with a pymongo command listener) and fails on a collection scan. On nx-27017 a plain equality
(``{"org_id": o}``) scanned the whole collection (see :func:`novapulse_runtime.documents.by_index`): handling one
``user.password_changed`` slowed 7x with 100k users in the projection.
"""

from __future__ import annotations

import pytest
from helpers_notification import BASE_URL, SENDER, FakeEvent, SmtpSink

from novapulse_devkit.queryplans import assert_no_scans, recorded_database
from novapulse_notification.mailer import Mailer, SmtpRelay
from novapulse_notification.notifier import Links, Notifier
from novapulse_notification.rendering import Renderer
from novapulse_notification.repository import Repository
from novapulse_runtime.catalog import auth as A

pytestmark = pytest.mark.integration

ORG = "org-1"


async def test_handling_and_reading_notifications_never_scan_a_collection(
    mongo_url: str, names: str, sink: SmtpSink
) -> None:
    async with recorded_database(mongo_url, names) as (db, recorder):
        repo = Repository(db)
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
        recorder.clear()
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
        assert {q.coll for q in recorder.queries} >= {"users", "preferences", "deliveries", "notifications"}
        await assert_no_scans(db, recorder.queries)
