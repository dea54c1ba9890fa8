"""Test helpers of the notification service: a real SMTP server that records what it receives (and can be
told to answer 4xx/5xx), and a publisher of events onto producing services' streams."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from pydantic import BaseModel

from novapulse_devkit.servers import free_port
from novapulse_runtime.bus import Event, EventBus
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings

BASE_URL = "https://app.example.test"
SENDER = "NovaPulse <no-reply@novapulse.test>"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def to(self) -> str:
        return self.rcpt_tos[0]

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part"
        content = body.get_content()  # type: ignore[attr-defined]
        return str(content)

    @property
    def text(self) -> str:
        return self.part("plain")

    @property
    def html(self) -> str:
        return self.part("html")


def parse(content: bytes) -> EmailMessage:
    """A received message; one in UTF-8 (an SMTPUTF8 message, RFC 6532: raw UTF-8 headers) is parsed as text
    so its headers come out as the characters, not as escaped bytes."""
    try:
        msg = email.message_from_string(content.decode("utf-8"), policy=email.policy.default)
    except UnicodeDecodeError:
        msg = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


@dataclass
class SinkHandler:
    """Records accepted messages; ``replies`` (consumed in order) make DATA answer with an error instead."""

    received: list[Received] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    always: str | None = None
    data_calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    hold: str = ""
    """``after-accept``: store the message, then hold the 250 reply until ``release`` is set;
    ``before-accept``: hold before storing, then refuse with 451 (the message was never accepted)."""
    release: threading.Event = field(default_factory=threading.Event)
    held: int = 0

    async def _wait_release(self) -> None:
        with self.lock:
            self.held += 1
        await asyncio.to_thread(self.release.wait)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        hold = self.hold
        if hold == "before-accept":
            await self._wait_release()
            return "451 4.3.0 not accepted"
        with self.lock:
            self.data_calls += 1
            if self.always:
                return self.always
            if self.replies:
                return self.replies.pop(0)
            msg = parse(envelope.original_content)
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg))
        if hold == "after-accept":
            await self._wait_release()
        return "250 OK queued"


class SmtpSink:
    """A real aiosmtpd server on 127.0.0.1 (offering SMTPUTF8, RFC 6531, when ``smtputf8``)."""

    def __init__(self, *, smtputf8: bool = False) -> None:
        self.port = free_port()
        self.handler = SinkHandler()
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=smtputf8, decode_data=False
        )

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address.lower() in (t.lower() for t in r.rcpt_tos)]

    def env(self) -> dict[str, str]:
        return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.port)}


class ScriptedSmtp:
    """A minimal real SMTP server (asyncio on its own thread) for replies aiosmtpd will not produce: the
    answer to the end of each message's DATA is taken from ``replies`` as raw bytes (``b"451 \\xff busy"``:
    not UTF-8; ``b"999 what"``: no valid code), or ``None`` to drop the connection in the middle of DATA.
    It offers AUTH PLAIN and refuses every credential (535).
    With no reply left it accepts (``250``) and keeps the message in ``accepted``."""

    def __init__(self, replies: list[bytes | None], *, mail_from_reply: bytes = b"250 OK") -> None:
        self.port = free_port()
        self.replies = list(replies)
        self.mail_from_reply = mail_from_reply
        self.accepted: list[bytes] = []
        self.data_calls = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> ScriptedSmtp:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._session, "127.0.0.1", self.port), self._loop
        )
        self._server = future.result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-scripted\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
                elif verb == b"AUTH":
                    writer.write(b"535 5.7.8 authentication credentials invalid\r\n")
                elif verb == b"MAIL":
                    writer.write(self.mail_from_reply + b"\r\n")
                elif verb in (b"HELO", b"RCPT", b"RSET", b"NOOP"):
                    writer.write(b"250 OK\r\n")
                elif verb == b"DATA":
                    self.data_calls += 1
                    reply = self.replies.pop(0) if self.replies else b"250 OK accepted"
                    writer.write(b"354 go ahead\r\n")
                    if reply is None:  # hang up mid-DATA
                        await reader.readline()
                        return
                    body = b""
                    while (chunk := await reader.readline()) and chunk != b".\r\n":
                        body += chunk
                    if reply.startswith(b"2"):
                        self.accepted.append(body)
                    writer.write(reply + b"\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    return
                else:
                    writer.write(b"502 not implemented\r\n")
                await writer.drain()
        finally:
            writer.close()


@dataclass(frozen=True)
class FakeEvent:
    """An event as the bus hands it to a handler (for tests that call the notifier directly)."""

    type: str
    data: Any
    org_id: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))


def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    try:
        yield sink
    finally:
        sink.stop()


@asynccontextmanager
async def producer(source: str, redis_url: str, mongo_url: str, namespace: str) -> AsyncIterator[EventBus]:
    """An event bus publishing as ``source`` (e.g. "auth") into the test's namespace."""
    settings = ServiceSettings(service_name=source, redis_url=redis_url, mongo_url=mongo_url)
    rt = Runtime(settings, "api")
    try:
        yield EventBus(rt, namespace=namespace, tracing=False)
    finally:
        await rt.close()


async def publish(bus: EventBus, type_: str, data: BaseModel, org_id: str) -> Event:
    return await bus.publish(type_, data, org_id=org_id)
