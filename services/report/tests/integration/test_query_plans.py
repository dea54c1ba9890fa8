"""Every query the report worker and API send is served by an index on the server in use (issue 15).

Records each filter the repository really sends (``novapulse_devkit.queryplans.QueryRecorder``) while rows
are stored, a report is requested, counted, claimed, checkpointed, read window by window, finished, listed
and expired, and asks the server how it answers each one (``queryplans.scanning``): no collection scan. On
nx-27017 the claim (``status`` ``$in``) read the whole ``reports`` collection (230 ms with 50k reports, 0.9 ms
as an ``$or`` of ``$eq`` arms), the in-flight count (``count_documents``) read every document whatever its
filter (3.0 s), and a row window's plain equalities on ``org_id``/``ds`` kept the ``org_id, ds, key`` index
from serving it (97 → 39 ms per window): this test fails on those shapes.
"""

from __future__ import annotations

import pytest

from novapulse_devkit.queryplans import assert_no_scans, recorded_database
from novapulse_report.repository import Fact, Repository, RowQuery

pytestmark = pytest.mark.integration

ORG = "o1"


async def test_the_worker_and_api_queries_never_scan_a_collection(mongo_url: str, names: str) -> None:
    async with recorded_database(mongo_url, names) as (db, recorder):
        repo = Repository(db)
        await repo.ensure_indexes()
        facts = [Fact(f"f{i}", "auth_activity", ORG, 1_000 + i, {"event": "user.registered"}) for i in range(5)]
        await repo.add_facts(facts, 10)
        recorder.clear()

        rows = RowQuery("auth_activity", ORG, 0, 10_000, 20, {"event": "user.registered"})
        assert await repo.count_rows(rows) == 5
        assert await repo.count_in_flight(ORG) == 0
        assert await repo.bytes_stored(ORG) == 0
        report = await repo.insert_report(
            report_id="rp1",
            org_id=ORG,
            requested_by="u1",
            type_="auth_activity",
            format_="csv",
            params={},
            dedup_key="dk1",
            now_ms=100,
            estimated_total=5,
        )
        assert await repo.claim_dedup("dk1", report.id) is None
        assert await repo.dedup_holder("dk1") == report.id
        assert not await repo.move_dedup("dk1", "other", "rp2")
        claimed = await repo.claim_next("w1", 200, 5000)
        assert claimed is not None
        assert claimed.id == report.id
        assert await repo.checkpoint(report.id, "w1", 6000, rows_done=1)
        assert await repo.heartbeat(report.id, "w1", 7000)
        streamed = [d async for batch in repo.stream_rows(rows, "", 2, 5_000) for d in batch]
        assert len(streamed) == 5
        assert await repo.finish(report.id, "w1", 300, status="succeeded", size=10, expires_ms=400)
        await repo.release(report.id, "w1")
        assert await repo.get_report(ORG, report.id) is not None
        assert [r.id for r in await repo.list_reports(ORG, None, 10, status="succeeded", types=["auth_activity"])]
        assert await repo.total_bytes_stored() == 10
        assert [r.id for r in await repo.due_for_expiry(500, 10)] == [report.id]
        await repo.mark_expired(report.id, 500)
        assert not await repo.cancel(ORG, report.id, 600)
        await repo.release_dedup("dk1", report.id)
        assert await repo.delete_report(ORG, report.id)

        assert {q.coll for q in recorder.queries} >= {"facts", "reports", "dedup"}
        await assert_no_scans(db, recorder.queries)
