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

from novapulse_runtime.bus import Event, EventBus
from novapulse_runtime.devservers import free_port
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
            msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg))
        if hold == "after-accept":
            await self._wait_release()
        return "250 OK queued"


class SmtpSink:
    """A real aiosmtpd server on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.handler = SinkHandler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

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
