"""The worker's endpoint cache: attempts whose endpoint entries expired together are served by one read of
their organisation's enabled endpoints, not one read per endpoint; an endpoint not among them (disabled) is
still read on its own."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from novapulse_webhook import endpoints as endpoints_module
from novapulse_webhook.endpoints import EndpointCache


class Repo:
    def __init__(self) -> None:
        self.docs = {f"ep{i}": {"_id": f"ep{i}", "org_id": "o1", "enabled": i != 9} for i in range(10)}
        self.org_reads = 0
        self.endpoint_reads: list[str] = []

    async def org_endpoints(self, org_id: str) -> list[dict[str, Any]]:
        self.org_reads += 1
        await asyncio.sleep(0)
        return [d for d in self.docs.values() if d["org_id"] == org_id and d["enabled"]]

    async def endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        self.endpoint_reads.append(endpoint_id)
        await asyncio.sleep(0)
        return self.docs.get(endpoint_id)


async def test_expired_entries_of_an_organisation_are_read_back_in_one_query(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoints_module, "ENDPOINT_CACHE_TTL", 0.0)  # every entry is stale at once
    repo = Repo()
    cache = EndpointCache(cast(Any, repo))
    got = await asyncio.gather(*(cache.endpoint(f"ep{i}", "o1") for i in range(9)))
    assert [d["_id"] for d in got if d is not None] == [f"ep{i}" for i in range(9)]
    assert repo.org_reads == 1
    assert repo.endpoint_reads == []
    disabled = await cache.endpoint("ep9", "o1")
    assert disabled is not None
    assert disabled["enabled"] is False
    assert repo.endpoint_reads == ["ep9"]
    assert await cache.endpoint("ep404", "o1") is None
    assert await cache.endpoint("ep1") == repo.docs["ep1"]  # no organisation given: read on its own


async def test_fresh_entries_are_not_read_again() -> None:
    repo = Repo()
    cache = EndpointCache(cast(Any, repo))
    await cache.org_endpoints("o1")
    for i in range(9):
        assert await cache.endpoint(f"ep{i}", "o1") == repo.docs[f"ep{i}"]
    assert (repo.org_reads, repo.endpoint_reads) == (1, [])
