"""``novapulse_devkit.queryplans`` and ``documents.count`` on the real MongoDB-wire server: a write whose plain
equality nx-27017 cannot serve by an index is reported as a scan, its ``$eq`` form is not; ``count_documents``
is reported (``$group``), the ``count`` command counts exactly."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import ASCENDING, AsyncMongoClient

from novapulse_devkit.queryplans import QueryRecorder, plans
from novapulse_runtime.documents import by_index, count

pytestmark = pytest.mark.integration


async def test_scans_are_told_apart_from_index_served_queries(mongo_url: str, names: str) -> None:
    recorder = QueryRecorder()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, event_listeners=[recorder])
    try:
        coll = client[names]["items"]
        await coll.create_index([("org_id", ASCENDING), ("state", ASCENDING)])
        await coll.insert_many([{"_id": f"i{n}", "org_id": f"o{n % 3}", "state": "new"} for n in range(9)])
        recorder.clear()
        flt = {"org_id": "o1", "state": "new"}
        await coll.update_many(flt, {"$set": {"seen": True}})
        await coll.update_many(by_index(flt), {"$set": {"seen": True}})
        assert await coll.count_documents(by_index(flt)) == 3
        assert await count(coll, by_index(flt)) == 3
        await coll.find_one(by_index(flt))
        found = {(p.query.op, repr(p.query.filter)): p.scans for p in await plans(client[names], recorder.queries)}
        reply = await client[names].command({"explain": {"find": "items", "filter": {}}})
        on_nx = isinstance(reply["queryPlanner"]["winningPlan"], list)  # SQLite's plan rows, not a stage tree
        eq = repr(by_index(flt))
        assert found == {
            ("update", repr(flt)): on_nx,  # MongoDB serves both forms by the index
            ("update", eq): False,
            ("aggregate", eq): on_nx,
            ("count", eq): False,
            ("find", eq): False,
        }
    finally:
        await client.drop_database(names)
        await client.close()
