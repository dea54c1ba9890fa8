"""The auth repository's existence checks and log-in lookups are served by an index (issue 15).

Records the filters the repository really sends (``novapulse_devkit.queryplans.QueryRecorder``) and asks the
server how it answers each (``queryplans.scanning``). On nx-27017 ``count_documents(..., limit=1)`` — the old
e-mail checks of registration and invites — is an ``aggregate`` with ``$group`` that reads the whole ``users``
collection whatever the filter; they are now a ``find_one`` of the ``_id`` by ``$eq``: this test fails on the
old shape."""

from __future__ import annotations

import pytest

from novapulse_auth.repository import Repository, session_doc
from novapulse_devkit.queryplans import assert_no_scans, recorded_database

pytestmark = pytest.mark.integration


async def test_existence_checks_never_scan_the_users(mongo_url: str, names: str) -> None:
    async with recorded_database(mongo_url, names) as (db, recorder):
        repo = Repository(db)
        await repo.ensure_indexes()
        await repo.users.insert_many([{"_id": f"u{i}", "org_id": "o1", "email": f"a{i}@example.com"} for i in range(3)])
        recorder.clear()

        assert await repo.email_taken("a1@example.com")
        assert not await repo.email_taken("nobody@example.com")
        assert await repo.member_with_email("o1", "a2@example.com")
        assert not await repo.member_with_email("o2", "a2@example.com")

        assert {q.coll for q in recorder.queries} == {"users"}
        await assert_no_scans(db, recorder.queries)


async def test_refresh_token_lookups_in_sessions_use_the_index(mongo_url: str, names: str) -> None:
    """A family's first refresh token is found in ``sessions`` by ``refresh_hash`` (spent or not): by the index,
    not by reading every session."""
    async with recorded_database(mongo_url, names) as (db, recorder):
        repo = Repository(db)
        await repo.ensure_indexes()
        user = {"_id": "u1", "org_id": "o1"}
        for i in range(3):
            doc = session_doc(user=user, amr=["pwd"], max_age=3600, refresh_hash=f"h{i}", refresh_ttl=600)
            await repo.insert_session(doc)
        recorder.clear()

        used = await repo.use_first_refresh_token("h1")
        assert used is not None
        assert used["refresh_hash"] == "h1"
        assert await repo.use_first_refresh_token("h1") is None  # spent
        assert await repo.refresh_token_session("h1") == used["_id"]
        assert await repo.refresh_token_session("nope") is None

        assert {q.coll for q in recorder.queries} == {"sessions", "refresh_tokens"}
        await assert_no_scans(db, recorder.queries)
