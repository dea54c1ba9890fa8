"""The per-recipient e-mail limit is shared through the real Redis and counts per address."""

from __future__ import annotations

import pytest

from novapulse_notification.limits import recipient_limiter
from novapulse_notification.planning import GENERAL
from novapulse_notification.settings import NotificationSettings
from novapulse_runtime.runtime import Runtime

pytestmark = pytest.mark.integration


async def test_limit_per_address_shared_between_workers(redis_url: str, mongo_url: str, names: str):
    settings = NotificationSettings(
        redis_url=redis_url, mongo_url=mongo_url, recipient_email_limit=2, recipient_email_window=3600
    )
    one, two = Runtime(settings, "worker"), Runtime(settings, "worker")
    try:
        first, second = recipient_limiter(one, settings), recipient_limiter(two, settings)
        address = f"{names}@example.test"
        assert await first(address, GENERAL)
        assert await second(address.upper(), GENERAL)  # same address, another worker
        assert not await first(address, GENERAL)
        assert await first(f"other-{names}@example.test", GENERAL)
    finally:
        await one.close()
        await two.close()
