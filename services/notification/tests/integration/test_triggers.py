"""Each trigger produces the right mail to the right people: real MongoDB-wire server, real SMTP server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from helpers_notification import BASE_URL, FakeEvent, SmtpSink

from novapulse_notification.constants import DeliveryState
from novapulse_notification.notifier import RetryLater
from novapulse_notification.planning import Budget, InvalidEvent
from novapulse_notification.repository import Repository
from novapulse_runtime.catalog import auth as A
from novapulse_runtime.catalog import report as R
from novapulse_runtime.catalog import webhook as W
from novapulse_runtime.catalog import workflow as N

pytestmark = pytest.mark.integration

ORG = "org-1"
OTHER = "org-2"


async def register(notifier, user_id: str, email: str, name: str, org: str = ORG, role: str = "owner") -> FakeEvent:
    event = FakeEvent(
        "user.registered",
        A.UserRegistered(user_id=user_id, org_id=org, email=email, name=name, role="owner", organization=f"Org {org}"),
        org,
    )
    await notifier.handle(event)
    if role != "owner":
        await notifier.handle(
            FakeEvent("user.role_changed", A.UserRoleChanged(user_id=user_id, org_id=org, role=role, changed_by="x"))
        )
    return event


async def join(notifier, user_id: str, email: str, name: str, role: str, org: str = ORG, inviter: str = "u1") -> None:
    data = A.InviteAccepted(
        invite_id="i-" + user_id, org_id=org, user_id=user_id, email=email, name=name, role=role, invited_by=inviter
    )
    await notifier.handle(FakeEvent("invite.accepted", data, org))


async def test_welcome_mail_is_multipart_with_message_id_from_event(make_notifier, sink: SmtpSink, repo: Repository):
    notifier = make_notifier()
    event = await register(notifier, "u1", "Ada@Example.test", "Ada Lovelace")
    [mail] = sink.received
    assert mail.to == "ada@example.test"
    assert mail.message["Subject"] == "Welcome to NovaPulse, Ada Lovelace"
    assert mail.message["From"] == "NovaPulse <no-reply@novapulse.test>"
    assert mail.message["Message-ID"].strip().startswith(f"<{event.id}.")
    assert mail.message["Message-ID"].endswith("@novapulse.test>")
    assert mail.message.get_content_type() == "multipart/alternative"
    assert "Org org-1" in mail.text
    assert "Org org-1" in mail.html
    assert f"{BASE_URL}/login" in mail.text
    user = await repo.get_user(ORG, "u1")
    assert user is not None
    assert (user["email"], user["name"], user["role"], user["status"]) == (
        "ada@example.test",
        "Ada Lovelace",
        "owner",
        "active",
    )
    [notice] = await repo.list_notices(ORG, "u1", None, 10, False)
    assert notice["title"] == "Welcome to NovaPulse, Ada Lovelace"
    assert notice["read"] is False


async def test_invitation_mail_carries_token_link_and_user_invited_alone_sends_nothing(make_notifier, sink: SmtpSink):
    notifier = make_notifier()
    await register(notifier, "u1", "owner@example.test", "Olga Owner")
    expires = datetime.now(UTC) + timedelta(days=7)
    await notifier.handle(
        FakeEvent(
            "user.invited",
            A.UserInvited(
                invite_id="inv1",
                org_id=ORG,
                email="new@example.test",
                role="member",
                invited_by="u1",
                expires_at=expires,
            ),
        )
    )
    assert sink.to("new@example.test") == []
    token = "tok_Ab-9+/=&x"
    await notifier.handle(
        FakeEvent(
            "invite.delivery_requested",
            A.InviteDeliveryRequested(
                invite_id="inv1",
                org_id=ORG,
                email="New@Example.test",
                role="member",
                token=token,
                inviter_name="Olga Owner",
                organization="Org org-1",
                expires_at=expires,
            ),
        )
    )
    [mail] = sink.to("new@example.test")
    assert "Olga Owner invited you to join Org org-1" in mail.message["Subject"]
    link = next(word for word in mail.text.split() if word.startswith(BASE_URL + "/invite/accept"))
    assert parse_qs(urlparse(link).query)["token"] == [token]
    assert link.startswith(f"{BASE_URL}/invite/accept?token=")


async def test_security_notices_are_sent_even_when_turned_off(make_notifier, sink: SmtpSink, repo: Repository):
    notifier = make_notifier()
    await register(notifier, "u1", "sec@example.test", "Sam")
    # Stored preferences that try to switch security off (the API refuses this; the worker ignores it anyway).
    await repo.put_preferences(ORG, "u1", {"security": {"email": False, "in_app": False}})
    events = [
        ("user.password_changed", A.PasswordChanged(user_id="u1", org_id=ORG), "Your password was changed"),
        ("mfa.enabled", A.MfaEnabled(user_id="u1", org_id=ORG), "Two-factor authentication turned on"),
        ("mfa.disabled", A.MfaDisabled(user_id="u1", org_id=ORG, by="admin9"), "Two-factor authentication turned off"),
        ("mfa.recovery_code_used", A.MfaRecoveryCodeUsed(user_id="u1", org_id=ORG, remaining=3), "recovery code"),
        (
            "mfa.challenge_failed",
            A.MfaChallengeFailed(user_id="u1", org_id=ORG, ip="203.0.113.9", attempts=2),
            "Failed second-factor",
        ),
    ]
    for type_, data, _ in events:
        await notifier.handle(FakeEvent(type_, data, ORG))
    mails = sink.to("sec@example.test")[1:]  # after the welcome mail
    assert [m.message["Subject"] for m in mails] == [
        "Your password was changed",
        "Two-factor authentication turned on",
        "Two-factor authentication turned off",
        "A recovery code was used",
        "Failed second-factor attempt on your account",
    ]
    assert "by an administrator" in mails[2].text
    assert "3 recovery codes left" in mails[3].text
    assert "203.0.113.9" in mails[4].text
    assert "2 times" in mails[4].text
    notices = await repo.list_notices(ORG, "u1", None, 20, False)
    assert len(notices) == 6


async def test_invite_accepted_tells_the_inviter(make_notifier, sink: SmtpSink, repo: Repository):
    notifier = make_notifier()
    await register(notifier, "u1", "owner@example.test", "Olga")
    await join(notifier, "u2", "Bob@Example.test", "Bob", "member", inviter="u1")
    [mail] = sink.to("owner@example.test")[1:]
    assert mail.message["Subject"] == "Bob joined your organisation"
    assert "bob@example.test" in mail.text.lower()
    assert sink.to("bob@example.test") == []
    member = await repo.get_user(ORG, "u2")
    assert member is not None
    assert member["role"] == "member"


async def test_webhook_events_reach_owners_and_admins_of_that_org_only(make_notifier, sink: SmtpSink):
    notifier = make_notifier()
    await register(notifier, "u1", "owner@example.test", "Olga")
    await join(notifier, "u2", "admin@example.test", "Adam", "admin")
    await join(notifier, "u3", "member@example.test", "Mia", "member")
    await register(notifier, "x1", "other-owner@example.test", "Otto", org=OTHER)
    before = len(sink.received)
    await notifier.handle(
        FakeEvent(
            "webhook.endpoint.disabled",
            W.EndpointDisabled(endpoint_id="ep1", org_id=ORG, url="https://hooks.example.test/x", reason="410 Gone"),
            ORG,
        )
    )
    await notifier.handle(
        FakeEvent(
            "webhook.message.failed",
            W.MessageFailed(
                message_id="m1",
                endpoint_id="ep1",
                org_id=ORG,
                event_type="user.registered",
                attempts=8,
                last_error="500",
            ),
            ORG,
        )
    )
    new = sink.received[before:]
    assert sorted(m.to for m in new) == [
        "admin@example.test",
        "admin@example.test",
        "owner@example.test",
        "owner@example.test",
    ]
    subjects = {m.message["Subject"] for m in new}
    assert subjects == {
        "Webhook endpoint disabled: https://hooks.example.test/x",
        "Webhook delivery failed: user.registered",
    }
    assert f"{BASE_URL}/webhooks/endpoints/ep1" in new[0].text


async def test_report_completed_links_to_the_report(make_notifier, sink: SmtpSink):
    notifier = make_notifier()
    await register(notifier, "u1", "owner@example.test", "Olga")
    await join(notifier, "u2", "analyst@example.test", "Ana", "member")
    data = R.ReportCompleted(
        report_id="r1", org_id=ORG, requested_by="u2", name="Q3", format="csv", download_path="/api/v1/reports/r1/file"
    )
    await notifier.handle(FakeEvent("report.completed", data, ORG))
    [mail] = sink.to("analyst@example.test")
    assert mail.message["Subject"] == 'Your report "Q3" is ready'
    assert f"{BASE_URL}/api/v1/reports/r1/file" in mail.text
    assert f'href="{BASE_URL}/api/v1/reports/r1/file"' in mail.html


async def test_notification_requested_by_role_and_by_user(make_notifier, sink: SmtpSink):
    notifier = make_notifier()
    await register(notifier, "u1", "owner@example.test", "Olga")
    await join(notifier, "u2", "m1@example.test", "M1", "member")
    await join(notifier, "u3", "m2@example.test", "M2", "member")
    before = len(sink.received)
    data = N.NotificationRequested(
        org_id=ORG, template="workflow_notice", role="member", data={"subject": "Weekly digest", "message": "Hi"}
    )
    await notifier.handle(FakeEvent("notification.requested", data, ORG))
    new = sink.received[before:]
    assert sorted(m.to for m in new) == ["m1@example.test", "m2@example.test"]
    assert all(m.message["Subject"] == "Weekly digest" for m in new)
    one = N.NotificationRequested(org_id=ORG, template="workflow_notice", user_id="u1", data={"message": "Solo"})
    await notifier.handle(FakeEvent("notification.requested", one, ORG))
    assert "Solo" in sink.to("owner@example.test")[-1].text
    bad = N.NotificationRequested(org_id=ORG, template="security_notice", user_id="u1")
    with pytest.raises(InvalidEvent, match="cannot be requested"):
        await notifier.handle(FakeEvent("notification.requested", bad, ORG))


async def test_the_same_event_twice_sends_one_mail(make_notifier, sink: SmtpSink, repo: Repository):
    notifier = make_notifier()
    event = await register(notifier, "u1", "once@example.test", "Once")
    await notifier.handle(event)
    await make_notifier().handle(event)  # another worker, same event
    assert len(sink.to("once@example.test")) == 1
    assert len(await repo.list_notices(ORG, "u1", None, 10, False)) == 1
    deliveries = await repo.list_deliveries(ORG, {"event_id": event.id}, "", 10)
    assert sorted((d["channel"], d["state"]) for d in deliveries) == [("email", "sent"), ("in_app", "sent")]


async def test_user_provided_names_are_escaped_in_html(make_notifier, sink: SmtpSink):
    notifier = make_notifier()
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    event = FakeEvent(
        "user.registered",
        A.UserRegistered(
            user_id="u1", org_id=ORG, email="e@example.test", name=evil, role="owner", organization="<b>Org</b>"
        ),
        ORG,
    )
    await notifier.handle(event)
    [mail] = sink.received
    assert "<script>" not in mail.html
    assert "<img" not in mail.html
    assert "<b>Org</b>" not in mail.html
    assert "&lt;script&gt;" in mail.html
    assert "&lt;b&gt;Org&lt;/b&gt;" in mail.html
    assert evil in mail.text  # plain text is not HTML: shown as typed
    # The security sentence partial is a .txt include, still escaped inside the HTML part.
    await notifier.handle(
        FakeEvent(
            "mfa.challenge_failed", A.MfaChallengeFailed(user_id="u1", org_id=ORG, ip="<i>1.2.3.4</i>", attempts=1)
        )
    )
    assert "&lt;i&gt;1.2.3.4&lt;/i&gt;" in sink.received[-1].html


async def test_header_injection_through_a_name_is_impossible(make_notifier, sink: SmtpSink):
    notifier = make_notifier()
    name = "Eve\r\nBcc: victim@example.test"
    await notifier.handle(
        FakeEvent(
            "user.registered",
            A.UserRegistered(
                user_id="u1", org_id=ORG, email="eve@example.test", name=name, role="owner", organization="O"
            ),
        )
    )
    [mail] = sink.received
    assert mail.rcpt_tos == ["eve@example.test"]
    assert mail.message["Bcc"] is None


async def test_preferences_suppress_non_critical_channels(make_notifier, sink: SmtpSink, repo: Repository):
    notifier = make_notifier()
    await register(notifier, "u1", "p@example.test", "Pat")
    await repo.put_preferences(ORG, "u1", {"account": {"email": False, "in_app": True}})
    event = FakeEvent("user.role_changed", A.UserRoleChanged(user_id="u1", org_id=ORG, role="admin", changed_by="u9"))
    await notifier.handle(event)
    assert len(sink.to("p@example.test")) == 1  # only the welcome mail
    states = {d["channel"]: d for d in await repo.list_deliveries(ORG, {"event_id": event.id}, "", 10)}
    assert states["email"]["state"] == DeliveryState.SUPPRESSED
    assert states["email"]["reason"] == "turned off in preferences"
    assert states["in_app"]["state"] == DeliveryState.SENT
    assert (await repo.get_user(ORG, "u1") or {})["role"] == "admin"


async def test_unknown_recipient_is_retried_and_disabled_user_gets_nothing(make_notifier, sink: SmtpSink):
    notifier = make_notifier()
    with pytest.raises(RetryLater, match="not known"):
        await notifier.handle(FakeEvent("mfa.enabled", A.MfaEnabled(user_id="ghost", org_id=ORG)))
    await register(notifier, "u1", "d@example.test", "Dee")
    await notifier.handle(FakeEvent("user.disabled", A.UserDisabled(user_id="u1", org_id=ORG, disabled_by="u9")))
    await notifier.handle(FakeEvent("mfa.enabled", A.MfaEnabled(user_id="u1", org_id=ORG)))
    assert len(sink.to("d@example.test")) == 1


async def test_a_user_of_another_org_is_never_reached(make_notifier, sink: SmtpSink):
    notifier = make_notifier()
    await register(notifier, "x1", "other@example.test", "Otto", org=OTHER)
    # An ORG event naming OTHER's user id does not find them: the projection is looked up by (org, user).
    with pytest.raises(RetryLater):
        await notifier.handle(FakeEvent("mfa.enabled", A.MfaEnabled(user_id="x1", org_id=ORG)))
    with pytest.raises(InvalidEvent, match="differ"):
        await notifier.handle(FakeEvent("mfa.enabled", A.MfaEnabled(user_id="x1", org_id=OTHER), ORG))
    assert len(sink.to("other@example.test")) == 1


async def test_per_recipient_rate_limit_suppresses_extra_mail(make_notifier, sink: SmtpSink, repo: Repository):
    allowed = {"n": 2}

    async def limiter(_recipient: str, _budget: Budget) -> bool:
        allowed["n"] -= 1
        return allowed["n"] >= 0

    notifier = make_notifier(limiter=limiter)
    await register(notifier, "u1", "r@example.test", "Ray")
    await notifier.handle(FakeEvent("mfa.enabled", A.MfaEnabled(user_id="u1", org_id=ORG)))
    third = FakeEvent("mfa.disabled", A.MfaDisabled(user_id="u1", org_id=ORG, by="u1"))
    await notifier.handle(third)
    assert len(sink.to("r@example.test")) == 2
    [email] = await repo.list_deliveries(ORG, {"event_id": third.id, "channel": "email"}, "", 10)
    assert (email["state"], email["reason"]) == ("suppressed", "recipient rate limit (security)")


async def test_template_override_directory(make_notifier, sink: SmtpSink, tmp_path):
    (tmp_path / "welcome.subject.txt").write_text("Custom hello {{ recipient_name }}")
    notifier = make_notifier(templates_dir=str(tmp_path))
    await register(notifier, "u1", "c@example.test", "Cy")
    assert sink.received[0].message["Subject"] == "Custom hello Cy"
    assert "Org org-1" in sink.received[0].text  # the other parts still come from the package


async def test_projection_ignores_an_older_event_handled_late(make_notifier, repo: Repository):
    notifier = make_notifier()
    now = datetime.now(UTC)
    late = FakeEvent(
        "user.registered",
        A.UserRegistered(user_id="u1", org_id=ORG, email="o@example.test", name="O", role="owner", organization="O"),
        time=now - timedelta(seconds=10),
    )
    newer = FakeEvent(
        "user.role_changed", A.UserRoleChanged(user_id="u1", org_id=ORG, role="admin", changed_by="x"), time=now
    )
    with pytest.raises(RetryLater):  # handled first although it happened later; its mail waits for the user
        await notifier.handle(newer)
    await notifier.handle(late)
    user = await repo.get_user(ORG, "u1")
    assert user is not None
    assert (user["role"], user["email"], user["status"]) == ("admin", "o@example.test", "active")


async def test_an_unusable_address_fails_without_retry(make_notifier, sink: SmtpSink, repo: Repository):
    notifier = make_notifier()
    event = FakeEvent(
        "invite.delivery_requested",
        A.InviteDeliveryRequested(
            invite_id="i1",
            org_id=ORG,
            email="victim@example.test\r\nBcc: x@example.test",
            role="member",
            token="t",
            inviter_name="I",
            organization="O",
            expires_at=datetime.now(UTC),
        ),
    )
    await notifier.handle(event)
    assert sink.received == []
    [doc] = await repo.list_deliveries(ORG, {"event_id": event.id}, "", 10)
    assert (doc["state"], doc["reason"]) == (
        "failed",
        "not a usable e-mail address: e-mail address contains spaces, control characters or forbidden characters",
    )


async def test_delivery_log_pages_newest_first_without_gaps(make_notifier, repo: Repository):
    notifier = make_notifier()
    await register(notifier, "u1", "log@example.test", "Lo")
    for _ in range(3):
        await notifier.handle(FakeEvent("mfa.enabled", A.MfaEnabled(user_id="u1", org_id=ORG)))
    everything = await repo.list_deliveries(ORG, {}, None, 100)
    assert len(everything) == 8  # 4 events x (in-app, e-mail)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await repo.list_deliveries(ORG, {}, cursor, 3)
        seen += [d["_id"] for d in page]
        if len(page) < 3:
            break
        cursor = page[-1]["sort_key"]
    assert seen == [d["_id"] for d in everything]
    assert [d["sort_key"] for d in everything] == sorted((d["sort_key"] for d in everything), reverse=True)
    assert await repo.list_deliveries(OTHER, {}, None, 100) == []


async def test_a_template_file_rewritten_is_used_by_the_next_mail(make_notifier, sink: SmtpSink, tmp_path):
    override = tmp_path / "role_changed.subject.txt"
    override.write_text("First {{ role }}")
    notifier = make_notifier(templates_dir=str(tmp_path))
    await register(notifier, "u1", "t@example.test", "Tia")
    change = A.UserRoleChanged(user_id="u1", org_id=ORG, role="admin", changed_by="x")
    await notifier.handle(FakeEvent("user.role_changed", change))
    override.write_text("Second {{ role }}")  # no restart, no delay
    await notifier.handle(FakeEvent("user.role_changed", change))
    assert [m.message["Subject"] for m in sink.received[1:]] == ["First admin", "Second admin"]
