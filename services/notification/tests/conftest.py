"""Fixtures of the notification service's tests (helpers live in ``helpers_notification.py``)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).parent))

from helpers_notification import BASE_URL, SENDER, SmtpSink

from novapulse_notification.mailer import Mailer, SmtpRelay
from novapulse_notification.notifier import Links, Notifier
from novapulse_notification.rendering import Renderer
from novapulse_notification.repository import Repository


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) recording what it accepts."""
    server = SmtpSink().start()
    yield server
    server.stop()


@pytest.fixture
def fallback_sink() -> Iterator[SmtpSink]:
    server = SmtpSink().start()
    yield server
    server.stop()


@pytest.fixture
async def repo(mongo_url: str, names: str) -> AsyncIterator[Repository]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    repository = Repository(client[names])
    await repository.ensure_indexes()
    yield repository
    await client.drop_database(names)
    await client.close()


@pytest.fixture
def make_notifier(repo: Repository, sink: SmtpSink) -> Callable[..., Notifier]:
    """A notifier over the real database and the real SMTP sink (options: fallback, attempts, ...)."""

    def make(
        *,
        fallback: SmtpSink | None = None,
        attempts: int = 3,
        templates_dir: str = "",
        **kwargs: Any,
    ) -> Notifier:
        mailer = Mailer(
            SmtpRelay("primary", "127.0.0.1", sink.port, timeout=5),
            SmtpRelay("fallback", "127.0.0.1", fallback.port, timeout=5) if fallback else None,
            attempts=attempts,
            base_delay=0.01,
        )
        return Notifier(
            repo,
            Renderer(templates_dir),
            mailer,
            sender=SENDER,
            links=Links(BASE_URL, "/invite/accept"),
            **kwargs,
        )

    return make
