"""The webhook repository's counts are served by an index (issue 15).

``count_documents`` is an ``aggregate`` with ``$group`` that nx-27017 answers by reading the whole collection
whatever the filter (seconds with 100k stored messages); the endpoint quota check and the fan-out count now
use the ``count`` command with ``$eq`` filters (``documents.count`` / ``by_index``). Records the filters
the repository really sends and asks the server how it answers each: this test fails on the old shape."""

from __future__ import annotations

import pytest

from novapulse_devkit.queryplans import assert_no_scans, recorded_database
from novapulse_webhook.repository import Repository

pytestmark = pytest.mark.integration


async def test_counts_never_scan_a_collection(mongo_url: str, names: str) -> None:
    async with recorded_database(mongo_url, names) as (db, recorder):
        repo = Repository(db)
        await repo.ensure_indexes()
        await repo.endpoints.insert_many([{"_id": f"ep{i}", "org_id": "o1"} for i in range(3)])
        await repo.messages.insert_many([{"_id": f"m{i}", "org_id": "o1", "event_id": "e1"} for i in range(2)])
        recorder.clear()

        assert await repo.count_endpoints("o1") == 3
        assert await repo.count_endpoints("o2") == 0
        assert await repo.count_event_messages("o1", "e1") == 2

        assert {q.coll for q in recorder.queries} == {"endpoints", "messages"}
        await assert_no_scans(db, recorder.queries)
