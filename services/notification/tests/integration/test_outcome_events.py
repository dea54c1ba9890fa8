"""Each delivery that ends publishes exactly one public event through the outbox (``notification.delivered``,
``notification.failed``) with ids only, under an id derived from the delivery and its outcome. Real Redis
(the relay writes the stream), real MongoDB-wire server (deliveries and outbox), real SMTP server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers_notification import FakeEvent, SmtpSink

from novapulse_notification.constants import DeliveryState
from novapulse_notification.notifier import Notifier
from novapulse_notification.outcomes import outcome_event_id
from novapulse_notification.repository import Repository
from novapulse_notification.settings import NotificationSettings
from novapulse_runtime.bus import EventBus, Outbox
from novapulse_runtime.catalog import auth as A
from novapulse_runtime.clock import to_ms
from novapulse_runtime.runtime import Runtime

pytestmark = pytest.mark.integration

ORG = "org-out"
EMAIL = "ann.secret@example.test"


@pytest.fixture
async def bus(redis_url: str, mongo_url: str, names: str) -> AsyncIterator[EventBus]:
    """The notification service's bus over the test's database (the ``repo`` fixture's) and namespace."""
    settings = NotificationSettings(redis_url=redis_url, mongo_url=mongo_url, mongo_db=names)
    rt = Runtime(settings, "worker")
    try:
        yield EventBus(rt, namespace=names, tracing=False)
    finally:
        await rt.close()


@pytest.fixture
def publishing(bus: EventBus, make_notifier: Callable[..., Notifier]) -> Callable[..., Notifier]:
    def make(**kwargs: Any) -> Notifier:
        notifier: Notifier = make_notifier(outbox=bus.outbox(), **kwargs)
        return notifier

    return make


def registered() -> FakeEvent:
    return FakeEvent(
        "user.registered",
        A.UserRegistered(user_id="u1", org_id=ORG, email=EMAIL, name="Ann Secret", role="owner", organization="O"),
        ORG,
    )


async def records(outbox: Outbox) -> list[dict[str, Any]]:
    return [d async for d in outbox.collection.find({}).sort("_id", 1)]


async def published(bus: EventBus) -> list[dict[str, str]]:
    """Relay the outbox, then read the notification stream: each entry's fields."""
    while await bus.outbox().relay_once():
        pass
    entries = await bus.rt.redis.xrange(bus.stream("notification"))
    return [{str(k): str(v) for k, v in fields.items()} for _, fields in entries]


async def deliveries(repo: Repository, event: FakeEvent) -> dict[str, dict[str, Any]]:
    return {d["channel"]: d for d in await repo.list_deliveries(ORG, {"event_id": event.id}, "", 10)}


async def test_a_delivered_mail_and_notice_each_publish_one_event(
    publishing: Callable[..., Notifier], bus: EventBus, repo: Repository, sink: SmtpSink
) -> None:
    event = registered()
    notifier = publishing()
    await notifier.handle(event)
    await notifier.handle(event)  # redelivered: settled already, nothing sent or published again
    assert len(sink.received) == 1
    docs = await deliveries(repo, event)
    assert {c: d["state"] for c, d in docs.items()} == {"email": "sent", "in_app": "sent"}

    entries = await published(bus)
    assert sorted(e["type"] for e in entries) == ["notification.delivered", "notification.delivered"]
    by_channel = {json.loads(e["data"])["channel"]: e for e in entries}
    assert set(by_channel) == {"email", "in_app"}
    for channel, entry in by_channel.items():
        doc, data = docs[channel], json.loads(entry["data"])
        assert entry["source"] == "notification"
        assert entry["org_id"] == ORG
        assert entry["subject"] == doc["_id"]
        assert entry["id"] == outcome_event_id(doc["_id"], to_ms(doc["created_at"]), "notification.delivered")
        assert data["delivery_id"] == doc["_id"]
        assert data["user_id"] == "u1"
        assert data["template"] == "welcome"
        assert data["category"] == "account"
        assert data["cause_event_id"] == event.id
        assert data["cause_event_type"] == "user.registered"
        assert data["attempts"] == 1
        assert datetime.fromisoformat(data["delivered_at"]) >= datetime.fromisoformat(data["created_at"])
        flat = json.dumps(entry)
        assert EMAIL not in flat
        assert "Ann" not in flat

    # a redone settling write (a worker settling a delivery someone else settled) publishes nothing
    await notifier._finish(ORG, docs["email"]["_id"], DeliveryState.SENT)
    assert await records(bus.outbox()) == []
    assert len(await published(bus)) == 2


async def test_a_failed_mail_publishes_one_failed_event(
    publishing: Callable[..., Notifier], bus: EventBus, repo: Repository, sink: SmtpSink
) -> None:
    sink.handler.always = f"550 5.1.1 <{EMAIL}> mailbox unavailable"
    event = registered()
    notifier = publishing(attempts=3)
    await notifier.handle(event)  # permanent: no RetryLater
    assert len(await records(bus.outbox())) == 2  # written with the settling writes, before any relay
    await notifier.handle(event)
    docs = await deliveries(repo, event)
    assert docs["email"]["state"] == "failed"

    entries = await published(bus)
    assert sorted(e["type"] for e in entries) == ["notification.delivered", "notification.failed"]
    [failed] = [e for e in entries if e["type"] == "notification.failed"]
    data = json.loads(failed["data"])
    assert failed["id"] == outcome_event_id(docs["email"]["_id"], to_ms(docs["email"]["created_at"]), failed["type"])
    assert (data["channel"], data["user_id"], data["delivery_id"]) == ("email", "u1", docs["email"]["_id"])
    assert (data["error_class"], data["smtp_code"], data["attempts"]) == ("rejected", 550, 1)
    assert datetime.fromisoformat(data["failed_at"]) >= datetime.fromisoformat(data["created_at"])
    assert EMAIL not in json.dumps(failed)  # the relay's reply quoted the address: it stays in the service


async def test_an_unusable_address_of_a_non_user_fails_without_naming_anyone(
    publishing: Callable[..., Notifier], bus: EventBus
) -> None:
    invite = FakeEvent(
        "invite.delivery_requested",
        A.InviteDeliveryRequested(
            invite_id="i1",
            org_id=ORG,
            email="two@@example.test",
            role="member",
            token="secret-token",
            inviter_name="Bob",
            organization="O",
            expires_at=datetime.now(UTC) + timedelta(days=7),
        ),
        ORG,
    )
    await publishing().handle(invite)
    [entry] = await published(bus)
    data = json.loads(entry["data"])
    assert (entry["type"], data["error_class"], data["user_id"], data["attempts"]) == (
        "notification.failed",
        "invalid_address",
        "",
        0,
    )
    assert data["template"] == "invitation"
    assert "two@@" not in json.dumps(entry)
    assert "secret-token" not in json.dumps(entry)
