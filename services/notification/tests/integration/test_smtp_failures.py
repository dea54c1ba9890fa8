"""Transient SMTP errors are retried, permanent ones are not, and the fallback relay takes over: real SMTP."""

from __future__ import annotations

import pytest
from helpers_notification import FakeEvent, SmtpSink

from novapulse_devkit.servers import free_port
from novapulse_notification.mailer import Mailer, SmtpRelay
from novapulse_notification.notifier import RetryLater
from novapulse_notification.repository import Repository
from novapulse_runtime.catalog import auth as A

pytestmark = pytest.mark.integration

ORG = "org-1"


def registered(email: str = "a@example.test") -> FakeEvent:
    return FakeEvent(
        "user.registered",
        A.UserRegistered(user_id="u1", org_id=ORG, email=email, name="Ann", role="owner", organization="O"),
    )


async def email_delivery(repo: Repository, event: FakeEvent) -> dict:
    [doc] = await repo.list_deliveries(ORG, {"event_id": event.id, "channel": "email"}, "", 10)
    doc["attempts"] = (await repo.attempts_of(ORG, [doc["_id"]]))[doc["_id"]]
    return doc


async def test_4xx_is_retried_until_accepted(make_notifier, sink: SmtpSink, repo: Repository):
    sink.handler.replies = ["451 4.3.0 try again later", "421 4.7.0 busy"]
    event = registered()
    await make_notifier(attempts=3).handle(event)
    assert len(sink.received) == 1
    assert sink.handler.data_calls == 3
    doc = await email_delivery(repo, event)
    assert doc["state"] == "sent"
    assert [(a["outcome"], a["code"]) for a in doc["attempts"]] == [
        ("transient", 451),
        ("transient", 421),
        ("sent", 250),
    ]
    assert "try again later" in doc["attempts"][0]["response"]


async def test_5xx_fails_at_once_without_retry_or_fallback(
    make_notifier, sink: SmtpSink, fallback_sink: SmtpSink, repo: Repository
):
    sink.handler.always = "550 5.1.1 mailbox unavailable"
    event = registered()
    await make_notifier(attempts=3, fallback=fallback_sink).handle(event)  # no RetryLater: permanent
    assert sink.handler.data_calls == 1
    assert fallback_sink.handler.data_calls == 0
    doc = await email_delivery(repo, event)
    assert doc["state"] == "failed"
    assert doc["reason"].startswith("550")
    assert [(a["relay"], a["outcome"], a["code"]) for a in doc["attempts"]] == [("primary", "permanent", 550)]


async def test_fallback_relay_used_when_the_primary_keeps_failing(
    make_notifier, sink: SmtpSink, fallback_sink: SmtpSink, repo: Repository
):
    sink.handler.always = "451 4.3.2 system not accepting messages"
    event = registered()
    await make_notifier(attempts=2, fallback=fallback_sink).handle(event)
    assert sink.received == []
    assert sink.handler.data_calls == 2
    [mail] = fallback_sink.received
    assert mail.to == "a@example.test"
    doc = await email_delivery(repo, event)
    assert doc["state"] == "sent"
    assert [(a["relay"], a["outcome"]) for a in doc["attempts"]] == [
        ("primary", "transient"),
        ("primary", "transient"),
        ("fallback", "sent"),
    ]


async def test_connection_refused_is_transient_and_the_event_is_retried_later(
    make_notifier, sink: SmtpSink, repo: Repository
):
    sink.handler.always = "421 4.3.2 shutting down"
    event = registered()
    with pytest.raises(RetryLater, match="retrying"):
        await make_notifier(attempts=2).handle(event)
    doc = await email_delivery(repo, event)
    assert doc["state"] == "retrying"
    sink.handler.always = None  # the relay recovers; the bus redelivers the event
    await make_notifier(attempts=2).handle(event)
    assert len(sink.received) == 1
    doc = await email_delivery(repo, event)
    assert doc["state"] == "sent"
    assert len(doc["attempts"]) == 3


async def test_unreachable_relay_is_a_transient_error(make_notifier, sink: SmtpSink, fallback_sink: SmtpSink):
    dead = SmtpRelay("primary", "127.0.0.1", free_port(), timeout=2)
    mailer = Mailer(dead, SmtpRelay("fallback", "127.0.0.1", fallback_sink.port), attempts=2, base_delay=0.01)
    notifier = make_notifier()
    notifier.mailer = mailer
    await notifier.handle(registered("b@example.test"))
    assert [m.to for m in fallback_sink.received] == ["b@example.test"]
