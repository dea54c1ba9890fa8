"""E-mail: building multipart messages and handing them to SMTP relays with retries and a fallback relay.

Outcome of one attempt:

- ``sent``: the relay accepted the message (2xx after DATA);
- ``transient``: a 4xx reply, a refused or dropped connection, a timeout — retried with exponential backoff
  on the same relay, then on the fallback relay;
- ``permanent``: a 5xx reply, or a message this relay can never carry (an address that needs SMTPUTF8 on a
  relay without it, RFC 6531 §3.4) — no retry anywhere.

Any 2xx reply to the end of DATA is ``sent`` (RFC 5321 §4.2.1), not only 250. A refused greeting, AUTH
or sender (even 5xx, e.g. 535 bad credentials) is transient: the relay refuses this client, not the mail.
Replies are decoded leniently: text that is not UTF-8 is kept with U+FFFD in place of the bad bytes (it is
stored in the delivery log, which must stay valid UTF-8); a reply code outside 200-599 (RFC 5321 §4.2: a
relay talking nonsense) and a connection dropped mid-conversation are transient. No exception of an attempt
escapes: anything unexpected is a ``permanent`` attempt whose response names the error.

A small breaker sends new mail straight to the fallback relay (primary last) once the primary has failed
transiently ``SMTP_BREAKER_THRESHOLD`` times in a row, for ``SMTP_BREAKER_COOLDOWN`` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Literal

import aiosmtplib

from novapulse_runtime.clock import utcnow

from .addresses import Address
from .constants import MESSAGE_ID_DOMAIN_FALLBACK, SMTP_RESPONSE_MAX_CHARS
from .rendering import Rendered, one_line
from .settings import NotificationSettings

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

Outcome = Literal["sent", "transient", "permanent"]


@dataclass(frozen=True)
class SmtpRelay:
    """One SMTP relay: ``name`` as the delivery log and metrics show it, ``tls`` as RFC 8314 (implicit TLS)
    or RFC 3207 (STARTTLS) or none, ``timeout`` in seconds per conversation."""

    name: str
    host: str
    port: int
    tls: Literal["none", "starttls", "tls"] = "none"
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 10.0


@dataclass(frozen=True)
class Attempt:
    """One conversation with a relay, as the delivery log shows it."""

    at: datetime
    relay: str
    outcome: Outcome
    code: int | None
    response: str


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    attempts: tuple[Attempt, ...]

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


def message_id(event_id: str, recipient: str, sender: str) -> str:
    """``Message-ID`` (RFC 5322 §3.6.4: ``<id-left@id-right>``) derived from the event id (and the recipient,
    as one event may mail several people): the same delivery always carries the same id, so a duplicate after
    a crash is recognisable. The right part is the sender's domain (``MESSAGE_ID_DOMAIN_FALLBACK`` when it
    has none); the left part keeps at most 80 characters of the event id that are safe there."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or MESSAGE_ID_DOMAIN_FALLBACK
    safe_event = "".join(c for c in event_id if c.isalnum() or c in "-_.")[:80] or "event"
    digest = hashlib.sha256(recipient.lower().encode()).hexdigest()[:16]
    return f"<{safe_event}.{digest}@{domain}>"


def display_name(name: str) -> str:
    """A display name fit for a header: control characters dropped, CR/LF and other whitespace collapsed
    (no header injection), at most 100 characters. Quoting and RFC 2047 encoding of names in any script
    are left to :mod:`email.headerregistry`."""
    return one_line(_CONTROL.sub("", name), 100)


def build_message(
    *, sender: str, to: Address, to_name: str, rendered: Rendered, msg_id: str, event_id: str
) -> EmailMessage:
    """A multipart/alternative message (RFC 2046 §5.1.4): plain text first, then HTML. ``to`` comes from
    :func:`novapulse_notification.addresses.normalize`; ``msg_id`` from :func:`message_id`. Headers: RFC 5322
    ``From``/``To``/``Subject``/``Message-ID``/``Date``, ``Auto-Submitted: auto-generated`` (RFC 3834 §5) and
    ``X-NovaPulse-Event-ID``. Raises ``ValueError`` only for a sender the settings should have refused."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = HeaderAddress(display_name=display_name(to_name), username=to.local, domain=to.domain)
    msg["Subject"] = rendered.subject
    msg["Message-ID"] = msg_id
    msg["Date"] = formatdate(usegmt=True)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-NovaPulse-Event-ID"] = one_line(event_id, 100)
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg


def classify(code: int | None) -> Outcome:
    """5xx is permanent; 4xx, no code (connection trouble) and codes outside 200-599 are transient."""
    if code is not None and 500 <= code < 600:
        return "permanent"
    return "transient"


def reply_text(text: str) -> str:
    """A relay's reply as storable text: bytes that were not UTF-8 (kept by aiosmtplib as lone surrogates)
    become U+FFFD, whitespace is collapsed, at most ``SMTP_RESPONSE_MAX_CHARS`` characters."""
    clean = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    clean = clean.encode("utf-8", "replace").decode("utf-8")
    return one_line(_CONTROL.sub("", clean), SMTP_RESPONSE_MAX_CHARS)


Sender = Callable[[EmailMessage, SmtpRelay], Awaitable[tuple[int, str]]]


async def smtp_send(message: EmailMessage, relay: SmtpRelay) -> tuple[int, str]:
    """Send with aiosmtplib; returns the final reply. Raises aiosmtplib errors or ``OSError``."""
    _errors, reply = await aiosmtplib.send(
        message,
        hostname=relay.host,
        port=relay.port,
        use_tls=relay.tls == "tls",
        start_tls=relay.tls == "starttls",
        username=relay.username or None,
        password=relay.password or None,
        timeout=relay.timeout,
    )
    return 250, reply


async def attempt_once(message: EmailMessage, relay: SmtpRelay, send: Sender = smtp_send) -> Attempt:
    """One attempt on one relay, never raising (cancellation aside)."""
    now = utcnow()
    try:
        code, reply = await send(message, relay)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        worst = max(codes) if codes else None
        text = "; ".join(r.message for r in exc.recipients)
        return Attempt(now, relay.name, classify(worst), worst, reply_text(text))
    except (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPHeloError, aiosmtplib.SMTPSenderRefused) as exc:
        # The relay refuses *us* (credentials, greeting, our SMTP_FROM), not this mail: whatever the code,
        # retry later or on the fallback; failing the mail would lose it over a configuration error.
        reply_code = exc.code if 0 <= exc.code <= 999 else None
        return Attempt(
            now, relay.name, "transient", reply_code, reply_text(f"relay refused the session: {exc.message}")
        )
    except aiosmtplib.SMTPResponseException as exc:
        reply_code = exc.code if 0 <= exc.code <= 999 else None
        if isinstance(exc, aiosmtplib.SMTPDataError) and reply_code is not None and 200 <= reply_code < 300:
            # Any 2yz completes the transaction (RFC 5321 §4.2.1); aiosmtplib only takes 250. Retrying would
            # send the mail twice.
            return Attempt(now, relay.name, "sent", reply_code, reply_text(exc.message))
        return Attempt(now, relay.name, classify(reply_code), reply_code, reply_text(exc.message))
    except aiosmtplib.SMTPNotSupported as exc:  # e.g. SMTPUTF8 needed (RFC 6531) and not offered
        return Attempt(now, relay.name, "permanent", None, reply_text(f"relay cannot carry this message: {exc}"))
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return Attempt(now, relay.name, "transient", None, reply_text(f"{type(exc).__name__}: {exc}"))
    except Exception as exc:  # a message the client library cannot encode, a bug: never retried blindly
        log.exception("unexpected error while sending", extra={"relay": relay.name})
        return Attempt(now, relay.name, "permanent", None, reply_text(f"cannot send: {type(exc).__name__}: {exc}"))
    return Attempt(now, relay.name, "sent", code, reply_text(reply))


class Mailer:
    """Sends one message through the primary relay, retrying transient failures, then the fallback."""

    def __init__(
        self,
        primary: SmtpRelay,
        fallback: SmtpRelay | None = None,
        *,
        attempts: int = 3,
        base_delay: float = 0.5,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 30.0,
        send: Sender = smtp_send,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.attempts = attempts
        self.base_delay = base_delay
        self.breaker_threshold = breaker_threshold
        self.breaker_cooldown = breaker_cooldown
        self._send = send
        self._sleep = sleep
        self._clock = clock
        self._primary_failures = 0
        self._primary_tripped_at = -float("inf")

    def _relays(self) -> list[SmtpRelay]:
        if self.fallback is None:
            return [self.primary]
        if self._clock() - self._primary_tripped_at < self.breaker_cooldown:
            return [self.fallback, self.primary]
        return [self.primary, self.fallback]

    def _note(self, relay: SmtpRelay, outcome: Outcome) -> None:
        if relay is not self.primary:
            return
        if outcome == "transient":
            self._primary_failures += 1
            if self._primary_failures >= self.breaker_threshold:
                self._primary_tripped_at = self._clock()
        else:
            self._primary_failures = 0
            self._primary_tripped_at = -float("inf")

    async def send(
        self, message: EmailMessage, on_attempt: Callable[[Attempt], Awaitable[None]] | None = None
    ) -> SendResult:
        """Deliver ``message``; every attempt is reported to ``on_attempt`` as it ends."""
        done: list[Attempt] = []
        for relay in self._relays():
            for i in range(self.attempts):
                result = await attempt_once(message, relay, self._send)
                done.append(result)
                self._note(relay, result.outcome)
                if on_attempt is not None:
                    await on_attempt(result)
                if result.outcome != "transient":
                    return SendResult(result.outcome, tuple(done))
                if i + 1 < self.attempts:
                    delay = self.base_delay * (2**i)
                    await self._sleep(delay * (0.5 + random.random() / 2))
        return SendResult("transient", tuple(done))


def relays(settings: NotificationSettings, catcher_port: int | None = None) -> tuple[SmtpRelay, SmtpRelay | None]:
    """The primary relay (the local catcher on ``catcher_port`` when ``SMTP_HOST`` is empty) and the optional
    fallback (``SMTP_FALLBACK_HOST``)."""
    if catcher_port is not None:
        primary = SmtpRelay("catcher", "127.0.0.1", catcher_port, "none", timeout=settings.smtp_timeout)
    else:
        primary = SmtpRelay(
            "primary",
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_tls,
            settings.smtp_username,
            settings.smtp_password.get_secret_value(),
            settings.smtp_timeout,
        )
    fallback = None
    if settings.smtp_fallback_host:
        fallback = SmtpRelay(
            "fallback",
            settings.smtp_fallback_host,
            settings.smtp_fallback_port,
            settings.smtp_fallback_tls,
            settings.smtp_username,
            settings.smtp_password.get_secret_value(),
            settings.smtp_timeout,
        )
    return primary, fallback
