"""Claiming due messages against the real MongoDB-wire server: candidates are found by status (pending and
due, or a claim whose lease ran out), most overdue first, and each claim is atomic and guarded, so two
workers never hold the same message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from novapulse_runtime.clock import to_ms, utcnow
from novapulse_webhook.constants import MessageStatus
from novapulse_webhook.repository import Repository, message_doc

pytestmark = pytest.mark.integration


@pytest.fixture
async def repo(mongo_url: str, names: str) -> AsyncIterator[Repository]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    try:
        r = Repository(client[f"c_{names}"])
        await r.ensure_indexes()
        yield r
    finally:
        await client.drop_database(f"c_{names}")
        await client.close()


async def _store(repo: Repository, name: str, status: MessageStatus, due_in_s: float | None, ep: str = "ep1") -> str:
    now = utcnow()
    doc = message_doc(org_id="o", endpoint_id=ep, event_id=name, event_type="t", body="{}", now=now)
    doc.update(
        status=status, next_attempt_at=to_ms(now + timedelta(seconds=due_in_s)) if due_in_s is not None else None
    )
    if status is MessageStatus.SENDING:
        doc["claim"] = "theirs"
    await repo.messages.insert_one(doc)
    return str(doc["_id"])


async def test_due_messages_are_pending_or_expired_claims_most_overdue_first(repo: Repository) -> None:
    late_pending = await _store(repo, "a", MessageStatus.PENDING, -30)
    expired_claim = await _store(repo, "b", MessageStatus.SENDING, -20)
    pending = await _store(repo, "c", MessageStatus.PENDING, -10)
    await _store(repo, "d", MessageStatus.PENDING, 60)  # not due yet
    await _store(repo, "e", MessageStatus.SENDING, 60)  # a live claim
    await _store(repo, "f", MessageStatus.SUCCEEDED, None)
    await _store(repo, "g", MessageStatus.FAILED, None)
    other = await _store(repo, "h", MessageStatus.PENDING, -40, ep="ep2")
    now = utcnow()
    found = await repo.due_messages(now, 10)
    assert [d["_id"] for d in found] == [other, late_pending, expired_claim, pending]
    assert [d["_id"] for d in await repo.due_messages(now, 2)] == [other, late_pending]
    assert [d["_id"] for d in await repo.due_messages(now, 10, ["ep2"])] == [late_pending, expired_claim, pending]


async def test_a_claim_is_taken_once_and_returns_the_message_as_it_was(repo: Repository) -> None:
    expired = await _store(repo, "b", MessageStatus.SENDING, -20)
    now = utcnow()
    (candidate,) = await repo.due_messages(now, 10)
    until = now + timedelta(seconds=10)
    before = await repo.claim(candidate, now, until, "mine")
    assert before is not None
    assert before["_id"] == expired
    assert before["claim"] == "theirs"
    assert await repo.claim(candidate, now, until, "late") is None  # another worker found it too: too late
    stored = await repo.messages.find_one({"_id": expired})
    assert stored is not None
    assert (stored["status"], stored["claim"], stored["next_attempt_at"]) == ("sending", "mine", to_ms(until))
    assert await repo.due_messages(utcnow(), 10) == []


async def test_a_candidate_that_changed_state_is_not_claimed(repo: Repository) -> None:
    msg = await _store(repo, "a", MessageStatus.PENDING, -5)
    now = utcnow()
    (candidate,) = await repo.due_messages(now, 10)
    await repo.messages.update_one({"_id": msg}, {"$set": {"status": MessageStatus.SUCCEEDED, "next_attempt_at": None}})
    assert await repo.claim(candidate, now, now + timedelta(seconds=10), "mine") is None
