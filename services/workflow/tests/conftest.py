"""Fixtures of the workflow service's tests."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).parent))

from helpers_workflow import FakeEffects

from novapulse_workflow.repository import Repository


@pytest.fixture
async def repo(mongo_url: str, names: str) -> AsyncIterator[Repository]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    repository = Repository(client[names])
    await repository.ensure_indexes()
    yield repository
    await client.drop_database(names)
    await client.close()


@pytest.fixture
def effects() -> FakeEffects:
    return FakeEffects()
