"""Fixtures of the webhook service's tests."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.fernet import Fernet

from novapulse_devkit.testing import start_together

sys.path.insert(0, str(Path(__file__).parent))

from helpers_webhook import Api, Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
def webhook_env(token_issuer: Any, names: str) -> dict[str, str]:
    """Environment for spawned webhook processes: test keys, loopback allowed, a short retry schedule."""
    return {
        **token_issuer.env(),
        "WEBHOOK_SECRET_KEYS": Fernet.generate_key().decode(),
        "WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_RETRY_SCHEDULE": "0,0.5,0.5",
        "WEBHOOK_TIMEOUT": "3",
        "WEBHOOK_LEASE": "4",
        "WEBHOOK_POLL_INTERVAL": "0.05",
        "EVENTS_NAMESPACE": names,
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def stack(spawn: Callable[..., Any], webhook_env: dict[str, str]) -> Iterator[Callable[..., tuple[Any, Any]]]:
    """Start the api and worker processes: ``api, worker = stack(**env_overrides)``. Their logs are
    printed at teardown (pytest shows them when a test fails)."""
    started: list[Any] = []

    def start(**overrides: str) -> tuple[Any, Any]:
        env = {**webhook_env, **overrides}
        api = spawn("novapulse_webhook", "api", env=env, start=False)
        worker = spawn("novapulse_webhook", "worker", env=env, start=False)
        start_together([api, worker])  # their start-ups overlap on the cores
        started.extend([api, worker])
        return api, worker

    yield start
    for proc in started:
        print(f"--- {proc.role} log ---\n{proc.logs()[-5000:]}")


@pytest.fixture
def client(token_issuer: Any, http: aiohttp.ClientSession) -> Callable[..., Api]:
    """``client(api_url, org, role)`` → an :class:`Api` acting as that user."""

    def make(url: str, org: str = "org-a", role: str = "owner", user: str = "u1") -> Api:
        return Api(url, token_issuer.mint(user, org, role), http)

    return make
