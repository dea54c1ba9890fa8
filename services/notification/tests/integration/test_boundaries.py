"""Bad input at the SMTP and event boundaries (issue 10 §1): odd relay replies, addresses and names in any
script, markup and control characters from events. Each ends as a delivery ``failed`` with the real reason
or as a correctly encoded mail, and the worker goes on. Real SMTP servers, real MongoDB-wire server."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from helpers_notification import FakeEvent, ScriptedSmtp, SmtpSink

from novapulse_notification.mailer import Mailer, SmtpRelay
from novapulse_notification.notifier import Notifier, RetryLater
from novapulse_notification.repository import Repository
from novapulse_runtime.catalog import auth as A
from novapulse_runtime.catalog import workflow as N

pytestmark = pytest.mark.integration

ORG = "org-1"


def invitation(email_address: str, n: int = 0) -> FakeEvent:
    return FakeEvent(
        "invite.delivery_requested",
        A.InviteDeliveryRequested(
            invite_id=f"i{n}",
            org_id=ORG,
            email=email_address,
            role="member",
            token=f"t{n}",
            inviter_name="Olga",
            organization="Acme",
            expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        ),
        ORG,
    )


def registered(user_id: str, address: str, name: str) -> FakeEvent:
    return FakeEvent(
        "user.registered",
        A.UserRegistered(user_id=user_id, org_id=ORG, email=address, name=name, role="owner", organization="Acme"),
        ORG,
    )


async def delivery(repo: Repository, event: FakeEvent) -> dict:
    [doc] = await repo.list_deliveries(ORG, {"event_id": event.id, "channel": "email"}, "", 10)
    doc["attempts"] = (await repo.attempts_of(ORG, [doc["_id"]]))[doc["_id"]]
    return doc


@pytest.fixture
def scripted() -> Iterator[list[ScriptedSmtp]]:
    servers: list[ScriptedSmtp] = []
    yield servers
    for server in servers:
        server.stop()


def on_scripted(notifier: Notifier, servers: list[ScriptedSmtp], replies: list[bytes | None]) -> ScriptedSmtp:
    server = ScriptedSmtp(replies).start()
    servers.append(server)
    notifier.mailer = Mailer(SmtpRelay("primary", "127.0.0.1", server.port, timeout=5), attempts=3, base_delay=0.01)
    return server


async def test_relay_replies_that_are_not_utf8_are_logged_readably(make_notifier, repo: Repository, scripted):
    notifier = make_notifier()
    server = on_scripted(notifier, scripted, [b"451 4.3.0 \xff\xfe busy \xc3", b"550 5.1.1 unknown \xe9l\xe8ve"])
    event = invitation("a@example.test")
    await notifier.handle(event)  # no exception: 451 retried, 550 settles it
    doc = await delivery(repo, event)
    assert (doc["state"], doc["reason"]) == ("failed", "550 5.1.1 unknown \ufffdl\ufffdve")
    assert [(a["outcome"], a["code"], a["response"]) for a in doc["attempts"]] == [
        ("transient", 451, "4.3.0 \ufffd\ufffd busy \ufffd"),
        ("permanent", 550, "5.1.1 unknown \ufffdl\ufffdve"),
    ]
    assert server.accepted == []
    await notifier.handle(invitation("b@example.test", 1))  # and the worker goes on
    assert len(server.accepted) == 1


async def test_invalid_reply_codes_and_a_hang_up_mid_data_are_transient(make_notifier, repo: Repository, scripted):
    notifier = make_notifier()
    server = on_scripted(notifier, scripted, [b"999 what is this", None])
    event = invitation("c@example.test")
    await notifier.handle(event)
    doc = await delivery(repo, event)
    assert doc["state"] == "sent"
    outcomes = [(a["outcome"], a["code"]) for a in doc["attempts"]]
    assert outcomes == [("transient", 999), ("transient", None), ("sent", 250)]
    assert "Disconnected" in doc["attempts"][1]["response"] or "reset" in doc["attempts"][1]["response"].lower()
    assert len(server.accepted) == 1
    assert b"To: c@example.test" in server.accepted[0]


async def test_any_2xx_after_data_is_sent_once(make_notifier, repo: Repository, scripted):
    notifier = make_notifier()
    server = on_scripted(notifier, scripted, [b"252 2.0.0 accepted, oddly"])
    event = invitation("e@example.test")
    await notifier.handle(event)
    doc = await delivery(repo, event)
    assert doc["state"] == "sent"
    assert [(a["outcome"], a["code"]) for a in doc["attempts"]] == [("sent", 252)]
    assert (server.data_calls, len(server.accepted)) == (1, 1)  # not retried: one copy


async def test_refused_credentials_are_a_relay_problem_not_a_failed_mail(make_notifier, repo: Repository, scripted):
    notifier = make_notifier()
    server = on_scripted(notifier, scripted, [])
    relay = SmtpRelay("primary", "127.0.0.1", server.port, username="bot", password="wrong", timeout=5)
    notifier.mailer = Mailer(relay, attempts=2, base_delay=0.01)
    event = invitation("f@example.test")
    with pytest.raises(RetryLater):  # kept for a later attempt, not lost
        await notifier.handle(event)
    doc = await delivery(repo, event)
    assert doc["state"] == "retrying"
    assert [(a["outcome"], a["code"]) for a in doc["attempts"]] == [("transient", 535), ("transient", 535)]
    assert doc["reason"] == "535 relay refused the session: 5.7.8 authentication credentials invalid"


async def test_a_refused_sender_is_a_relay_problem_not_a_failed_mail(make_notifier, repo: Repository, scripted):
    notifier = make_notifier()
    server = ScriptedSmtp([], mail_from_reply=b"553 5.7.1 sender not allowed").start()
    scripted.append(server)
    notifier.mailer = Mailer(SmtpRelay("primary", "127.0.0.1", server.port, timeout=5), attempts=1)
    event = invitation("g@example.test")
    with pytest.raises(RetryLater):
        await notifier.handle(event)
    doc = await delivery(repo, event)
    assert (doc["state"], doc["reason"]) == ("retrying", "553 relay refused the session: 5.7.1 sender not allowed")


async def test_every_relay_misbehaving_leaves_the_delivery_retrying_not_stuck(
    make_notifier, repo: Repository, scripted
):
    notifier = make_notifier()
    on_scripted(notifier, scripted, [b"421 \xff", None, b"000 nonsense"])
    event = invitation("d@example.test")
    with pytest.raises(RetryLater):
        await notifier.handle(event)
    doc = await delivery(repo, event)
    assert (doc["state"], doc["lease_until_ms"]) == ("retrying", 0)  # released, not held
    await notifier.handle(event)  # the bus's redelivery: the relay behaves now
    assert (await delivery(repo, event))["state"] == "sent"


async def test_idn_domain_is_sent_as_its_ascii_form(make_notifier, sink: SmtpSink):
    notifier = make_notifier()
    await notifier.handle(registered("u1", "Ana@Bücher.example", "Ana"))
    [mail] = sink.received
    assert mail.rcpt_tos == ["ana@xn--bcher-kva.example"]
    [to] = mail.message["To"].addresses
    assert (to.display_name, to.username, to.domain) == ("Ana", "ana", "xn--bcher-kva.example")


async def test_non_ascii_local_part_uses_smtputf8_when_the_relay_offers_it(make_notifier, repo: Repository):
    utf8_sink = SmtpSink(smtputf8=True).start()
    try:
        notifier = make_notifier()
        notifier.mailer = Mailer(SmtpRelay("primary", "127.0.0.1", utf8_sink.port, timeout=5), attempts=1)
        event = invitation("jörg.山田@example.test")
        await notifier.handle(event)
        [mail] = utf8_sink.received
        assert mail.rcpt_tos == ["jörg.山田@example.test"]
        assert mail.message["To"].addresses[0].username == "jörg.山田"
        assert (await delivery(repo, event))["state"] == "sent"
    finally:
        utf8_sink.stop()


async def test_non_ascii_local_part_on_a_relay_without_smtputf8_fails_with_the_reason(
    make_notifier, sink: SmtpSink, repo: Repository
):
    notifier = make_notifier()
    event = invitation("jörg@example.test")
    await notifier.handle(event)  # no retry, no crash
    doc = await delivery(repo, event)
    assert doc["state"] == "failed"
    assert doc["reason"].startswith("relay cannot carry this message:")
    assert "SMTPUTF8 is not supported" in doc["reason"]
    assert [a["outcome"] for a in doc["attempts"]] == ["permanent"]
    await notifier.handle(invitation("plain@example.test", 1))
    assert [m.to for m in sink.received] == ["plain@example.test"]


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("no-at-sign.example.test", "exactly one @"),
        ("a@b@example.test", "exactly one @"),
        ("a b@example.test", "spaces, control characters or forbidden characters"),
        ("a@example.test>\r\nRCPT TO:<x@evil.test", "spaces, control characters or forbidden characters"),
        ("x" * 65 + "@example.test", "longer than 64 octets"),
        (".a@example.test", "leading, trailing or doubled dot"),
        ("a@exa_mple.test", "letters, digits and inner hyphens"),
        ("a@example..test", "empty or over-long label"),
        ("a@" + "\u0080" * 3 + ".test", "not a valid internationalised domain name"),
    ],
)
async def test_unusable_addresses_fail_with_their_reason(
    make_notifier, sink: SmtpSink, repo: Repository, address: str, why: str
):
    notifier = make_notifier()
    event = invitation(address)
    await notifier.handle(event)
    doc = await delivery(repo, event)
    assert doc["state"] == "failed"
    assert doc["reason"].startswith("not a usable e-mail address: ")
    assert why in doc["reason"]
    assert sink.received == []


async def test_display_names_in_any_script_and_with_specials_are_encoded(make_notifier, sink: SmtpSink):
    notifier = make_notifier()
    names = ["Zoë 山田 Ωmega", 'Eve "the admin", <admin@evil.test>', "Nul\x00Bell\x07 Tab\tName"]
    for n, name in enumerate(names):
        await notifier.handle(registered(f"u{n}", f"n{n}@example.test", name))
    raw = [m.message.as_bytes() for m in sink.received]
    assert all(line.isascii() for line in raw)  # headers RFC 2047-encoded, nothing raw
    parsed = [email.message_from_bytes(r, policy=email.policy.default)["To"].addresses for r in raw]
    assert [(a[0].display_name, a[0].addr_spec) for a in parsed] == [
        ("Zoë 山田 Ωmega", "n0@example.test"),
        ('Eve "the admin", <admin@evil.test>', "n1@example.test"),
        ("NulBell Tab Name", "n2@example.test"),
    ]
    assert [len(a) for a in parsed] == [1, 1, 1]  # a name never adds a recipient
    assert all(m.rcpt_tos == [f"n{n}@example.test"] for n, m in enumerate(sink.received))


async def test_requested_notification_data_of_any_shape_is_rendered_safely(make_notifier, sink: SmtpSink):
    notifier = make_notifier()
    await notifier.handle(registered("u1", "wf@example.test", "Wes"))
    data = N.NotificationRequested(
        org_id=ORG,
        template="workflow_notice",
        user_id="u1",
        data={
            "subject": "Quarterly\r\nBcc: victim@example.test <b>report</b>",
            "message": {"nested": ["<script>alert(1)</script>", 1.5, None]},
            "link": "javascript:alert(document.cookie)",
            "extra": "x" * 5000,
        },
    )
    await notifier.handle(FakeEvent("notification.requested", data, ORG))
    mail = sink.to("wf@example.test")[-1]
    assert mail.message["Subject"] == "Quarterly Bcc: victim@example.test <b>report</b>"
    assert mail.message["Bcc"] is None
    assert mail.rcpt_tos == ["wf@example.test"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html
    assert "<script>" not in mail.html
    assert 'href="#"' in mail.html
    assert "javascript:" not in mail.html
    assert '{"nested":["<script>alert(1)</script>",1.5,null]}' in mail.text  # JSON text, not a Python repr


async def test_control_characters_from_events_never_reach_the_mail(make_notifier, sink: SmtpSink, repo: Repository):
    notifier = make_notifier()
    # (lone surrogates cannot arrive: the bus refuses data that is not valid UTF-8 before any handler runs)
    event = registered("u1", "ctl@example.test", "Ann\x00\x1b[2J\u2028 Lee")
    await notifier.handle(event)
    [mail] = sink.received
    raw = mail.message.as_bytes()
    assert b"\x00" not in raw
    assert b"\x1b" not in raw
    assert mail.message["Subject"] == "Welcome to NovaPulse, Ann[2J Lee"
    assert "Hello Ann[2J\u2028 Lee," in mail.text
    [notice] = await repo.list_notices(ORG, "u1", None, 10, False)
    assert notice["title"] == "Welcome to NovaPulse, Ann[2J Lee"


async def test_a_template_that_raises_fails_its_deliveries_with_the_reason(
    make_notifier, sink: SmtpSink, repo: Repository, tmp_path
):
    (tmp_path / "role_changed.txt").write_text("{{ 1 // 0 }}")
    notifier = make_notifier(templates_dir=str(tmp_path))
    await notifier.handle(registered("u1", "tpl@example.test", "Tia"))
    event = FakeEvent("user.role_changed", A.UserRoleChanged(user_id="u1", org_id=ORG, role="admin", changed_by="x"))
    await notifier.handle(event)  # no exception escapes: both deliveries settled
    docs = await repo.list_deliveries(ORG, {"event_id": event.id}, "", 10)
    assert sorted((d["channel"], d["state"], d["reason"]) for d in docs) == [
        ("email", "failed", "template 'role_changed': ZeroDivisionError: integer division or modulo by zero"),
        ("in_app", "failed", "template 'role_changed': ZeroDivisionError: integer division or modulo by zero"),
    ]
    await notifier.handle(FakeEvent("mfa.enabled", A.MfaEnabled(user_id="u1", org_id=ORG), ORG))
    assert [m.message["Subject"] for m in sink.received][-1] == "Two-factor authentication turned on"
