"""Chaos: the worker is killed with SIGKILL while a mail is in flight. Never a loss; at most one duplicate
(same Message-ID), and only when the kill falls between the relay accepting the mail and the worker
recording it."""

from __future__ import annotations

import signal

import pytest
from helpers_notification import SmtpSink, producer

from novapulse_runtime.catalog import auth as A
from novapulse_runtime.testing import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

FAST_RECOVERY = {"EVENT_HANDLER_TIMEOUT": "3", "DELIVERY_LEASE_SECONDS": "3", "SMTP_TIMEOUT": "30"}


@pytest.fixture
def env(sink: SmtpSink, token_issuer, names: str, tmp_path) -> dict[str, str]:
    return {
        **sink.env(),
        **token_issuer.env(),
        **FAST_RECOVERY,
        "EVENTS_NAMESPACE": names,
        "MAIL_CATCHER_DIR": str(tmp_path / "mail"),
    }


async def _kill_during_send(spawn, sink: SmtpSink, env, redis_url, mongo_url, names, hold: str) -> None:
    org = f"org-{names}"
    sink.handler.hold = hold
    first = spawn("novapulse_notification", "worker", env=env)
    async with producer("auth", redis_url, mongo_url, names) as auth:
        await auth.publish(
            "user.registered",
            A.UserRegistered(
                user_id="u1", org_id=org, email="k@example.test", name="Kim", role="owner", organization="K"
            ),
            org_id=org,
        )
        await wait_until(lambda: sink.handler.held == 1, timeout=30, message=f"mail in flight; log:\n{first.logs()}")
        first.signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        sink.handler.release.set()  # the relay's reply goes to a dead connection
        sink.handler.hold = ""
        second = spawn("novapulse_notification", "worker", env=env)
        try:
            await wait_until(
                lambda: _settled(sink, hold), timeout=45, interval=0.1, message="redelivery after the kill"
            )
        except AssertionError:
            print(second.logs(), sink.handler.held, len(sink.received))
            raise
        # And the restarted worker keeps working: a later event arrives exactly once.
        await auth.publish("mfa.enabled", A.MfaEnabled(user_id="u1", org_id=org), org_id=org)
        await wait_until(
            lambda: any(m.message["Subject"] == "Two-factor authentication turned on" for m in sink.received),
            timeout=30,
            message="a later mail",
        )


def _settled(sink: SmtpSink, hold: str) -> bool:
    copies = len(sink.to("k@example.test"))
    return copies == (2 if hold == "after-accept" else 1)


async def test_kill_between_smtp_accept_and_record_gives_at_most_one_duplicate(
    spawn, sink: SmtpSink, env, redis_url, mongo_url, names
):
    await _kill_during_send(spawn, sink, env, redis_url, mongo_url, names, "after-accept")
    welcome = [m for m in sink.to("k@example.test") if m.message["Subject"].startswith("Welcome")]
    assert len(welcome) == 2  # the one duplicate the guarantee allows, never more
    assert welcome[0].message["Message-ID"] == welcome[1].message["Message-ID"]
    assert len([m for m in sink.received if m.message["Subject"].startswith("Two-factor")]) == 1


async def test_kill_before_the_relay_accepts_loses_nothing_and_duplicates_nothing(
    spawn, sink: SmtpSink, env, redis_url, mongo_url, names
):
    await _kill_during_send(spawn, sink, env, redis_url, mongo_url, names, "before-accept")
    welcome = [m for m in sink.to("k@example.test") if m.message["Subject"].startswith("Welcome")]
    assert len(welcome) == 1
