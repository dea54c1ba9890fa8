from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from novapulse_devkit.testing import ServiceProcess

SAMPLE = "tests.support.sample"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def sample(spawn: Callable[..., ServiceProcess]) -> ServiceProcess:
    return spawn(SAMPLE, "api")
