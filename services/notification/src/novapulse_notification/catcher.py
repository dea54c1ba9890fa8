"""Local mail catcher: a real SMTP server (aiosmtpd) that stores every message it receives as an ``.eml``
file. The worker starts it when ``SMTP_HOST`` is empty (``make run`` on a laptop), and sends to it."""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from novapulse_runtime.net import free_port, port_open

from .settings import NotificationSettings

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9@._-]+")


class StoreHandler:
    """aiosmtpd handler writing each message to ``<dir>/<time>-<recipient>-<id>.eml``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        first = envelope.rcpt_tos[0] if envelope.rcpt_tos else "unknown"
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{_UNSAFE.sub('_', first)[:80]}-{uuid.uuid4().hex[:8]}.eml"
        path = self.directory / name
        path.write_bytes(content)
        log.info("mail catcher stored a message", extra={"path": str(path), "recipients": len(envelope.rcpt_tos)})
        return "250 Message accepted for delivery"


class MailCatcher:
    """A started aiosmtpd controller (its own thread and loop) bound to 127.0.0.1."""

    def __init__(self, directory: str, port: int) -> None:
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        # SMTPUTF8 (RFC 6531): mail to a non-ASCII local part reaches the catcher as it would a modern relay
        self.controller = Controller(
            StoreHandler(self.directory), hostname="127.0.0.1", port=port, enable_SMTPUTF8=True
        )

    def start(self) -> MailCatcher:
        self.controller.start()
        return self

    @property
    def port(self) -> int:
        return int(self.controller.port)

    async def stop(self) -> None:
        self.controller.stop()


@contextlib.asynccontextmanager
async def local_catcher(settings: NotificationSettings) -> AsyncIterator[MailCatcher]:
    """The local mail catcher (used when ``SMTP_HOST`` is empty) on ``MAIL_CATCHER_PORT`` (a free port when
    that is 0 or taken), stopped when the block ends (with the runtime: ``await rt.open(local_catcher(...))``)."""
    port = settings.mail_catcher_port
    if port == 0 or port_open(port):
        port = free_port()
    catcher = MailCatcher(settings.mail_catcher_dir, port).start()
    log.warning(
        "SMTP_HOST is not set: mail goes to the local mail catcher",
        extra={"smtp": f"127.0.0.1:{catcher.port}", "directory": str(catcher.directory)},
    )
    try:
        yield catcher
    finally:
        await catcher.stop()
