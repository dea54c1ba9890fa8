"""The bound of docs/events.md §4 with a real service worker: a notification worker (default settings:
``EVENT_HANDLER_TIMEOUT`` 120 s, bus ``claim_idle`` 15 s) is killed with SIGKILL while it holds a burst of
events (every handler waiting on an SMTP relay that holds DATA); a second worker handles every one of them
— mail sent, stream entries acknowledged — within claim_idle + claim_interval (16 s) plus its start-up,
where the bus used to wait ``EVENT_HANDLER_TIMEOUT`` + 5 s = 125 s."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from novapulse_devkit.servers import free_port
from novapulse_devkit.testing import ServiceProcess, TokenIssuer, wait_until
from novapulse_runtime.bus import EventBus
from novapulse_runtime.catalog.auth import UserRegistered

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

BusFactory = Callable[..., EventBus]

BOUND_S = 15 + 1  # documented: claim_idle (15 s default) + claim_interval (1 s)
START_UP_S = 10  # the second worker's start, first reads and sends on a loaded 2-core machine
BURST = 8


@dataclass
class HoldingRelay:
    """A real SMTP server (aiosmtpd): while ``hold`` is set, DATA waits for ``release`` and then refuses
    (the mail was never accepted); otherwise it accepts and records the recipients."""

    hold: bool = True
    held: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    accepted: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.hold:
            with self.lock:
                self.held += 1
            await asyncio.to_thread(self.release.wait)
            return "451 4.3.0 not accepted"
        with self.lock:
            self.accepted.extend(envelope.rcpt_tos)
        return "250 OK queued"


@pytest.fixture
def relay() -> Iterator[tuple[HoldingRelay, int]]:
    handler = HoldingRelay()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    handler.release.set()
    controller.stop()


async def test_kill_9_of_a_notification_worker_mid_burst_resumes_within_the_bound(
    spawn: Callable[..., ServiceProcess],
    relay: tuple[HoldingRelay, int],
    token_issuer: TokenIssuer,
    make_bus: BusFactory,
    names: str,
    tmp_path: Any,
) -> None:
    handler, port = relay
    env = {
        **token_issuer.env(),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "EVENTS_NAMESPACE": names,
        "MAIL_CATCHER_DIR": str(tmp_path / "mail"),
        "QUEUE_CONCURRENCY": str(BURST),
    }
    auth = make_bus("auth")
    stream = auth.stream()
    redis = auth.rt.redis
    first = spawn("novapulse_notification", "worker", env=env)
    addresses = [f"burst{i}@example.test" for i in range(BURST)]
    events = [
        auth.event(
            "user.registered",
            UserRegistered(user_id=f"u{i}", org_id="o1", email=address, name="U", role="owner", organization="Acme"),
            org_id="o1",
            subject=f"u{i}",
        )
        for i, address in enumerate(addresses)
    ]
    await auth.publish_events(events)
    await wait_until(
        lambda: handler.held == BURST, timeout=30, message=f"{BURST} mails in flight; log:\n{first.logs()}"
    )
    held = await redis.xpending_range(stream, "notification", "-", "+", 100)
    assert len(held) == BURST  # the worker holds every entry of the burst
    first.signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    handler.hold = False
    handler.release.set()  # the held conversations end on dead connections
    second = spawn("novapulse_notification", "worker", env=env)

    async def all_handled() -> bool:
        pending = int((await redis.xpending(stream, "notification"))["pending"])
        with handler.lock:
            sent = set(handler.accepted)
        return pending == 0 and sent >= set(addresses)

    await wait_until(
        all_handled,
        timeout=BOUND_S + START_UP_S,
        interval=0.1,
        message=f"every event handled and acknowledged within {BOUND_S} s + start-up; log:\n{second.logs()}",
    )
