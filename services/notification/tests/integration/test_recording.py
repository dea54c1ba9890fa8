"""All deliveries of an event are recorded in one unordered insert: the ones recorded before are found and
left alone, the new ones are sent (real MongoDB-wire server, real SMTP server)."""

from __future__ import annotations

import pytest
from helpers_notification import FakeEvent, SmtpSink

from novapulse_notification.constants import DeliveryState
from novapulse_notification.repository import Repository
from novapulse_runtime.catalog import auth as A

pytestmark = pytest.mark.integration

ORG = "org-1"


async def test_an_event_whose_deliveries_are_partly_recorded_sends_only_the_new_ones(
    make_notifier, sink: SmtpSink, repo: Repository
) -> None:
    notifier = make_notifier()
    data = A.UserRegistered(
        user_id="u1", org_id=ORG, email="ada@example.test", name="Ada", role="owner", organization="O"
    )
    await notifier.handle(FakeEvent("user.registered", data, ORG))
    before = len(sink.received)  # the welcome mail
    event = FakeEvent("user.password_changed", A.PasswordChanged(user_id="u1", org_id=ORG), ORG)
    await notifier.handle(event)
    assert len(sink.received) == before + 1
    found = {d["channel"]: d async for d in repo.deliveries.find({"event_id": event.id})}
    assert {c: d["state"] for c, d in found.items()} == {"email": "sent", "in_app": "sent"}
    # the in-app record lost (say, restored from a backup taken in between): the redelivered event records it
    # again and settles it, while the e-mail, recorded and sent, is found and not sent twice
    notices = await repo.unread_count(ORG, "u1")
    await repo.deliveries.delete_one({"_id": found["in_app"]["_id"]})
    await notifier.handle(event)
    assert len(sink.received) == before + 1
    again = {d["channel"]: d async for d in repo.deliveries.find({"event_id": event.id})}
    assert {c: d["state"] for c, d in again.items()} == {"email": "sent", "in_app": DeliveryState.SENT.value}
    assert again["email"]["_id"] == found["email"]["_id"]
    assert again["in_app"]["created_at"] >= found["in_app"]["created_at"]
    assert await repo.unread_count(ORG, "u1") == notices  # the notice itself is not stored twice
