"""Retention: runs finished longer ago than the retention are deleted with their journal; others stay."""

from __future__ import annotations

import pytest

from novapulse_runtime.clock import now_ms
from novapulse_workflow.repository import Repository
from novapulse_workflow.worker import Housekeeper

pytestmark = pytest.mark.integration


async def test_old_finished_runs_are_deleted_with_their_journal(repo: Repository) -> None:
    old = await repo.insert_run("o1", "wd_x", 1, {"id": "e1"}, "s", [])
    recent = await repo.insert_run("o1", "wd_x", 1, {"id": "e2"}, "s", [])
    active = await repo.insert_run("o1", "wd_x", 1, {"id": "e3"}, "s", [])
    assert old is not None
    assert recent is not None
    assert active is not None
    await repo.journal_attempt(old, "s", "emit", "completed")
    two_days_ago = now_ms() - 2 * 86_400_000
    await repo.runs.update_one({"_id": old.id}, {"$set": {"status": "completed", "finished_ms": two_days_ago}})
    await repo.runs.update_one({"_id": recent.id}, {"$set": {"status": "failed", "finished_ms": now_ms()}})
    assert await Housekeeper(repo, None, 1, 60).once() == 1
    assert await repo.get_run("o1", old.id) is None
    assert await repo.journal_of(old.id) == []
    assert await repo.get_run("o1", recent.id) is not None
    assert await repo.get_run("o1", active.id) is not None
