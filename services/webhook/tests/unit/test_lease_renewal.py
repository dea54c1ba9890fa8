"""Lease renewal: a round renews the leases that are at least about a quarter lease old, in one bulk write;
a claim taken since the last round waits for the next one (most messages of a fast pipeline are delivered
before they would need a renewal write)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from novapulse_runtime.clock import utcnow
from novapulse_webhook.dispatcher import Job
from novapulse_webhook.leases import Leases

LEASE = timedelta(seconds=10)


class Repo:
    def __init__(self) -> None:
        self.renewed: list[list[str]] = []

    async def renew_claims(self, held: list[tuple[str, str]], lease_until: Any) -> int:
        self.renewed.append([message_id for message_id, _ in held])
        return len(held)


def job(name: str, left: timedelta) -> Job:
    return Job(name, "o1", "ep1", "e", "t", "{}", 0, 0, f"claim-{name}", utcnow() + left)


async def test_only_leases_a_quarter_old_or_more_are_renewed() -> None:
    repo = Repo()
    leases = Leases(cast(Any, repo), LEASE)
    fresh, quarter_old, half_old = job("fresh", LEASE), job("quarter", LEASE * 0.75), job("half", LEASE * 0.5)
    for j in (fresh, quarter_old, half_old):
        leases.hold(j)
    before = fresh.lease_until
    assert await leases.renew(lambda j: False) == 2
    assert repo.renewed == [["quarter", "half"]]
    assert fresh.lease_until == before
    assert quarter_old.lease_until > before
    assert half_old.lease_until == quarter_old.lease_until


async def test_nothing_old_enough_means_no_write() -> None:
    repo = Repo()
    leases = Leases(cast(Any, repo), LEASE)
    leases.hold(job("fresh", LEASE))
    assert await leases.renew(lambda j: False) == 0
    assert repo.renewed == []
