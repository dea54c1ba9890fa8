"""Fixtures of the report service's tests (helpers live in ``helpers_report.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient


@pytest.fixture
async def mongo(mongo_url: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    """A client of the session's MongoDB-wire server, closed whatever the test's outcome."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    yield client
    await client.close()
