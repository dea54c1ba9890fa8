"""Fixtures of the auth service's tests: an in-process auth app on real Redis and MongoDB-wire servers."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_auth import AuthApp, start_app


@pytest.fixture
async def make_app(redis_url: str, mongo_url: str, names: str) -> AsyncIterator[Callable[..., Any]]:
    """Start in-process auth apps (each its own database and rate-limit namespace) with setting overrides."""
    apps: list[AuthApp] = []

    async def make(**overrides: Any) -> AuthApp:
        app = await start_app(overrides.pop("redis_url", redis_url), mongo_url, f"{names}{len(apps)}", **overrides)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()


@pytest.fixture
async def app(make_app: Callable[..., Any]) -> AuthApp:
    result: AuthApp = await make_app()
    return result
