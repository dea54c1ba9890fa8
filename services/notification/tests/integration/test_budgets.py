"""Per-recipient budgets by kind of mail (issue 11 §2): invitations cannot silence a security notice, one kind
of security notice cannot silence another, and invitations are also limited per inviting organisation.
Real Redis (the shared GCRA limiter), real MongoDB-wire server, real SMTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers_notification import FakeEvent, SmtpSink

from novapulse_notification.limits import recipient_limiter
from novapulse_notification.notifier import Notifier
from novapulse_notification.repository import Repository
from novapulse_notification.settings import NotificationSettings
from novapulse_runtime.catalog import auth as A
from novapulse_runtime.runtime import Runtime

pytestmark = pytest.mark.integration

HOME = "org-home"


@pytest.fixture
async def limited(redis_url: str, mongo_url: str, make_notifier) -> AsyncIterator[Callable[..., Notifier]]:
    runtimes: list[Runtime] = []

    def make(**limits: Any) -> Notifier:
        settings = NotificationSettings(redis_url=redis_url, mongo_url=mongo_url, **limits)
        rt = Runtime(settings, "worker")
        runtimes.append(rt)
        notifier: Notifier = make_notifier(limiter=recipient_limiter(rt, settings))
        return notifier

    yield make
    for rt in runtimes:
        await rt.close()


def invitation(org: str, email: str, n: int) -> FakeEvent:
    return FakeEvent(
        "invite.delivery_requested",
        A.InviteDeliveryRequested(
            invite_id=f"{org}-{n}",
            org_id=org,
            email=email,
            role="member",
            token=f"tok{n}",
            inviter_name="Mallory",
            organization="Totally Legit Ltd",
            expires_at=datetime.now(UTC) + timedelta(days=7),
        ),
        org,
    )


async def states(repo: Repository, org: str, event: FakeEvent) -> list[tuple[str, str | None]]:
    docs = await repo.list_deliveries(org, {"event_id": event.id, "channel": "email"}, "", 10)
    return [(d["state"], d.get("reason")) for d in docs]


async def test_32_invitations_to_an_address_do_not_silence_its_password_changed_notice(
    limited, sink: SmtpSink, repo: Repository, names: str
):
    notifier = limited()  # the defaults: 10 invitations per address per hour
    victim = f"victim-{names}@example.test"
    await notifier.handle(
        FakeEvent(
            "user.registered",
            A.UserRegistered(user_id="v1", org_id=HOME, email=victim, name="Vic", role="owner", organization="Home"),
            HOME,
        )
    )
    invites = [invitation(f"org-evil-{names}", victim, n) for n in range(33)]
    for event in invites:
        await notifier.handle(event)
    assert len(sink.to(victim)) == 1 + 10  # the welcome, then the invitation budget of the address
    assert await states(repo, f"org-evil-{names}", invites[-1]) == [("suppressed", "recipient rate limit (invitation)")]
    changed = FakeEvent("user.password_changed", A.PasswordChanged(user_id="v1", org_id=HOME), HOME)
    await notifier.handle(changed)
    assert sink.to(victim)[-1].message["Subject"] == "Your password was changed"
    assert await states(repo, HOME, changed) == [("sent", None)]


async def test_a_flood_of_one_security_notice_does_not_silence_another(
    limited, sink: SmtpSink, repo: Repository, names: str
):
    notifier = limited(security_email_limit=3, recipient_email_limit=1)
    address = f"sec-{names}@example.test"
    await notifier.handle(
        FakeEvent(
            "user.registered",
            A.UserRegistered(user_id="s1", org_id=HOME, email=address, name="Sam", role="owner", organization="H"),
            HOME,
        )
    )
    flood = [
        FakeEvent(
            "mfa.challenge_failed", A.MfaChallengeFailed(user_id="s1", org_id=HOME, ip="203.0.113.7", attempts=n), HOME
        )
        for n in range(1, 7)
    ]
    for event in flood:
        await notifier.handle(event)
    # The welcome used the whole general budget (1); the flood is held back at 3 of its own kind.
    assert [m.message["Subject"] for m in sink.to(address)].count("Failed second-factor attempt on your account") == 3
    assert await states(repo, HOME, flood[-1]) == [("suppressed", "recipient rate limit (security)")]
    changed = FakeEvent("user.password_changed", A.PasswordChanged(user_id="s1", org_id=HOME), HOME)
    await notifier.handle(changed)
    assert sink.to(address)[-1].message["Subject"] == "Your password was changed"
    # ... and the general budget being spent does not matter to security notices either.
    role = FakeEvent("user.role_changed", A.UserRoleChanged(user_id="s1", org_id=HOME, role="admin", changed_by="x"))
    await notifier.handle(role)
    assert await states(repo, HOME, role) == [("suppressed", "recipient rate limit (general)")]


async def test_invitations_are_limited_per_inviting_organisation(limited, sink: SmtpSink, repo: Repository, names: str):
    notifier = limited(invitation_org_limit=3, invitation_recipient_limit=5)
    spammer, decent = f"org-spam-{names}", f"org-decent-{names}"
    events = [invitation(spammer, f"s{n}-{names}@example.test", n) for n in range(5)]
    for event in events:
        await notifier.handle(event)
    assert len(sink.received) == 3
    assert await states(repo, spammer, events[3]) == [("suppressed", "recipient rate limit (invitation)")]
    other = invitation(decent, f"s4-{names}@example.test", 99)  # same address, another organisation
    await notifier.handle(other)
    assert await states(repo, decent, other) == [("sent", None)]


async def test_verification_mail_has_its_own_budget(limited, sink: SmtpSink, repo: Repository, names: str):
    notifier = limited(invitation_recipient_limit=1, verification_email_limit=2)
    address = f"newbie-{names}@example.test"
    for n in range(3):  # the address's invitation budget is spent (1 sent, 2 suppressed)
        await notifier.handle(invitation(f"org-x-{names}", address, n))

    def verification(n: int) -> FakeEvent:
        return FakeEvent(
            "registration.verification_requested",
            A.VerificationRequested(
                email=address,
                name="Newbie",
                organization="New Org",
                token=f"v{n}",
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            ),
        )

    events = [verification(n) for n in range(3)]
    for event in events:
        await notifier.handle(event)
    subjects = [m.message["Subject"] for m in sink.to(address)]
    assert subjects.count("Confirm your e-mail address to finish registering New Org") == 2
    assert await states(repo, "", events[0]) == [("sent", None)]
    assert await states(repo, "", events[2]) == [("suppressed", "recipient rate limit (verification)")]
