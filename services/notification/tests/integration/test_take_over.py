"""A worker that dies after recording an event's deliveries leaves them leased to it; once the lease runs
out another worker takes both channels over from the stored payload, exactly once. Real MongoDB-wire
server, real SMTP server; the death is an exception that no handler code catches (like SIGKILL, nothing
after it runs)."""

from __future__ import annotations

import asyncio

import pytest
from helpers_notification import FakeEvent, SmtpSink

from novapulse_devkit.testing import wait_until
from novapulse_notification.notifier import Notifier, Work
from novapulse_notification.repository import Repository
from novapulse_runtime.catalog import auth as A
from novapulse_runtime.clock import now_ms

pytestmark = pytest.mark.integration

ORG = "org-1"


class Died(BaseException):
    """The process is gone: not an ``Exception``, so no catch-all in the notifier sees it."""


async def test_deliveries_of_a_dead_holder_are_taken_over_once_the_lease_runs_out(
    make_notifier, sink: SmtpSink, repo: Repository
):
    survivor: Notifier = make_notifier(lease_seconds=5)
    doomed: Notifier = make_notifier(lease_seconds=0.5)
    await survivor.handle(
        FakeEvent(
            "user.registered",
            A.UserRegistered(
                user_id="u1", org_id=ORG, email="t@example.test", name="Tom", role="owner", organization="T"
            ),
            ORG,
        )
    )

    async def die(_work: Work) -> None:
        raise Died

    doomed._settle = die  # type: ignore[method-assign,assignment]
    event = FakeEvent("mfa.enabled", A.MfaEnabled(user_id="u1", org_id=ORG), ORG)
    with pytest.raises(Died):
        await doomed.handle(event)
    held = await repo.list_deliveries(ORG, {"event_id": event.id}, "", 10)
    assert sorted((d["channel"], d["state"], d["lease_owner"]) for d in held) == [
        ("email", "pending", doomed.owner),
        ("in_app", "pending", doomed.owner),
    ]
    assert await survivor.take_over_once() == 0  # the lease has not run out yet: nobody takes it

    taken: list[int] = []

    async def both_taken() -> bool:
        taken.append(await survivor.take_over_once())
        return sum(taken) == 2

    await wait_until(both_taken, timeout=5, interval=0.05, message="take-over after the 0.5 s lease")
    assert [m.message["Subject"] for m in sink.to("t@example.test")][1:] == ["Two-factor authentication turned on"]
    [notice] = [n for n in await repo.list_notices(ORG, "u1", None, 10, False) if n["event_id"] == event.id]
    assert notice["title"] == "Two-factor authentication turned on"
    settled = await repo.list_deliveries(ORG, {"event_id": event.id}, "", 10)
    assert sorted((d["channel"], d["state"], d["lease_owner"]) for d in settled) == [
        ("email", "sent", survivor.owner),
        ("in_app", "sent", survivor.owner),
    ]
    assert all("payload" not in d for d in settled)  # the message (and any token in it) is not kept
    await survivor.handle(event)  # the bus redelivers the dead worker's event later: nothing is sent again
    assert len(sink.to("t@example.test")) == 2
    assert await survivor.take_over_once() == 0


async def test_a_living_holder_renews_its_lease_and_nobody_takes_its_delivery(
    make_notifier, sink: SmtpSink, repo: Repository
):
    holder: Notifier = make_notifier(lease_seconds=1.5)  # renewed every 0.5 s
    other: Notifier = make_notifier(lease_seconds=5)
    await other.handle(
        FakeEvent(
            "user.registered",
            A.UserRegistered(
                user_id="u1", org_id=ORG, email="r@example.test", name="Rae", role="owner", organization="R"
            ),
            ORG,
        )
    )
    sink.handler.hold = "after-accept"  # a slow relay: the reply comes when the test says so
    event = FakeEvent("mfa.enabled", A.MfaEnabled(user_id="u1", org_id=ORG), ORG)
    sending = asyncio.create_task(holder.handle(event))
    try:
        await wait_until(lambda: sink.handler.held == 1, timeout=10, message="the mail in flight")
        [doc] = await repo.list_deliveries(ORG, {"event_id": event.id, "channel": "email"}, "", 1)
        first_expiry = doc["lease_until_ms"]

        async def past_the_first_lease_and_still_held() -> bool:
            assert await other.take_over_once() == 0  # never taken while its holder lives
            [now] = await repo.list_deliveries(ORG, {"event_id": event.id, "channel": "email"}, "", 1)
            assert (now["state"], now["lease_owner"]) == ("sending", holder.owner)
            return now_ms() > first_expiry + 500 and now["lease_until_ms"] > now_ms()

        await wait_until(past_the_first_lease_and_still_held, timeout=10, interval=0.05, message="renewed leases")
    finally:
        sink.handler.hold = ""
        sink.handler.release.set()
        await sending
    assert [m.message["Subject"] for m in sink.to("r@example.test")][1:] == ["Two-factor authentication turned on"]
    [done] = await repo.list_deliveries(ORG, {"event_id": event.id, "channel": "email"}, "", 1)
    assert (done["state"], done["lease_owner"], done.get("claims", 0)) == ("sent", holder.owner, 0)
