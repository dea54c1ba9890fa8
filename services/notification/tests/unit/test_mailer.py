"""Retry, permanent failure, fallback and breaker logic of the mailer, with a fake sender (our own port)."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib
import pytest

from novapulse_notification.mailer import Mailer, SmtpRelay, classify, message_id

pytestmark = pytest.mark.unit

PRIMARY = SmtpRelay("primary", "p.example", 25)
FALLBACK = SmtpRelay("fallback", "f.example", 25)


class Script:
    """Answers per relay name from a list of outcomes: an int code raises that reply, 'ok' accepts."""

    def __init__(self, **plans: list[object]) -> None:
        self.plans = plans
        self.calls: list[str] = []

    async def __call__(self, message: EmailMessage, relay: SmtpRelay) -> tuple[int, str]:
        self.calls.append(relay.name)
        step = self.plans[relay.name].pop(0) if self.plans[relay.name] else "ok"
        if step == "ok":
            return 250, "2.0.0 queued"
        if step == "refused":
            raise ConnectionRefusedError("refused")
        assert isinstance(step, int)
        raise aiosmtplib.SMTPDataError(step, "reply")


async def no_sleep(_delay: float) -> None:
    return None


def mailer(script: Script, fallback: SmtpRelay | None = FALLBACK, **kw: object) -> Mailer:
    return Mailer(PRIMARY, fallback, send=script, sleep=no_sleep, **kw)  # type: ignore[arg-type]


def test_classify_codes():
    assert classify(550) == "permanent"
    assert classify(451) == "transient"
    assert classify(None) == "transient"


def test_message_id_is_stable_per_event_and_recipient():
    a = message_id("evt-1", "u1", "NovaPulse <no-reply@mail.example>")
    assert a == message_id("evt-1", "U1", "NovaPulse <no-reply@mail.example>")
    assert a != message_id("evt-1", "u2", "NovaPulse <no-reply@mail.example>")
    assert a.startswith("<evt-1.")
    assert a.endswith("@mail.example>")
    assert "\n" not in message_id("evt\r\nX: y", "u1", "x@y.z")


async def test_transient_then_success():
    script = Script(primary=[451, "refused", "ok"])
    result = await mailer(script, attempts=3).send(EmailMessage())
    assert result.outcome == "sent"
    assert [a.outcome for a in result.attempts] == ["transient", "transient", "sent"]


async def test_permanent_stops_everything():
    script = Script(primary=[554], fallback=["ok"])
    result = await mailer(script).send(EmailMessage())
    assert result.outcome == "permanent"
    assert script.calls == ["primary"]


async def test_fallback_after_primary_attempts_and_breaker_skips_primary_next_time():
    script = Script(primary=[451, 451, 451, 451], fallback=[])
    m = mailer(script, attempts=2, breaker_threshold=2, breaker_cooldown=60)
    first = await m.send(EmailMessage())
    assert first.outcome == "sent"
    assert script.calls == ["primary", "primary", "fallback"]
    script.calls.clear()
    second = await m.send(EmailMessage())
    assert second.outcome == "sent"
    assert script.calls == ["fallback"]


async def test_all_relays_transient_gives_transient():
    script = Script(primary=[421, 421], fallback=[421, 421])
    result = await mailer(script, attempts=2).send(EmailMessage())
    assert result.outcome == "transient"
    assert len(result.attempts) == 4


async def test_backoff_grows():
    delays: list[float] = []

    async def sleep(d: float) -> None:
        delays.append(d)

    script = Script(primary=[451, 451, 451, 451])
    await Mailer(PRIMARY, None, attempts=4, base_delay=1.0, send=script, sleep=sleep).send(EmailMessage())
    assert len(delays) == 3
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0
    assert 2.0 <= delays[2] <= 4.0
