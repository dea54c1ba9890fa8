"""The index audit's rules (novapulse_runtime.querylog shapes, novapulse_devkit.indexaudit verdicts), and the
recorder against the real MongoDB-wire server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from novapulse_devkit.indexaudit import audit, report
from novapulse_runtime.querylog import QueryRecorder, filter_shape


def test_filter_shape_keeps_fields_and_multiplies_or_branches() -> None:
    assert filter_shape({}) == [[]]
    assert filter_shape({"org_id": "o", "at": {"$gte": 1}}) == [["at", "org_id"]]
    assert filter_shape({"org_id": "o", "$or": [{"a": 1}, {"b": 2}]}) == [["a", "org_id"], ["b", "org_id"]]
    assert filter_shape({"$and": [{"a": 1}, {"b": {"$lt": 2}}]}) == [["a", "b"]]
    assert filter_shape({"$expr": {"$gt": ["$a", "$b"]}}) == [[]]


def _index(coll: str, *key: str, db: str = "novapulse_x") -> dict[str, object]:
    return {"kind": "index", "db": db, "coll": coll, "key": list(key)}


def _query(
    coll: str, fields: list[list[str]], sort: list[str] | None = None, db: str = "novapulse_x"
) -> dict[str, object]:
    return {
        "kind": "query",
        "db": db,
        "coll": coll,
        "op": "find",
        "fields": fields,
        "sort": sort or [],
        "where": "x.py:1",
    }


def test_a_query_is_served_when_an_index_starts_with_a_field_it_constrains() -> None:
    records = [_index("messages", "org_id", "created_at"), _query("messages", [["org_id", "status"]])]
    assert audit(records) == []


def test_a_query_on_fields_no_index_starts_with_is_reported() -> None:
    records = [_index("messages", "org_id", "created_at"), _query("messages", [["status"]])]
    [item] = audit(records)
    assert item.coll == "messages"
    assert item.fields == ("status",)
    assert "find messages by status" in item.describe()


def test_every_or_branch_needs_an_index_and_id_is_always_indexed() -> None:
    records = [_index("runs", "org_id"), _query("runs", [["org_id"], ["trigger_id"]]), _query("runs", [["_id"]])]
    [item] = audit(records)
    assert item.fields == ("trigger_id",)


def test_a_full_scan_is_reported_unless_an_index_serves_its_sort() -> None:
    records = [_index("runs", "due_at"), _query("runs", [[]], sort=["due_at"]), _query("runs", [[]])]
    [item] = audit(records)
    assert item.fields == ()
    assert item.sort == ()


def test_indexes_of_another_database_of_the_same_service_count() -> None:
    records = [
        _index("events", "org_id", db="t1_novapulse_report"),
        _query("events", [["org_id"]], db="t2_novapulse_report"),
        _query("events", [["org_id"]], db="t3_novapulse_other"),
    ]
    [item] = audit(records)
    assert item.db == "t3_novapulse_other"


async def test_the_recorder_keeps_shapes_of_our_code_and_index_keys(mongo_url: str, tmp_path: Path, names: str) -> None:
    recorder = QueryRecorder(tmp_path / "1.jsonl")
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url, event_listeners=[recorder])
    # The run's own audit (every client) sees an index on "kind" made by another client, so the deliberately
    # unindexed query below fails only this test's recorder, not the whole run.
    other: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
    try:
        await other[f"{names}_novapulse_audit"]["things"].create_index("kind")
    finally:
        await other.close()
    try:
        coll = client[f"{names}_novapulse_audit"]["things"]
        await coll.create_index([("org_id", 1), ("at", 1)])
        await coll.insert_one({"org_id": "o", "at": 1, "kind": "k"})
        # sent from this test file: not a query the services run, so not kept
        assert await coll.find_one({"kind": "k"}) is not None
        # from our code: a query by an unindexed field is kept; find_one({}) reads one document, not kept
        await _service_queries(coll)
    finally:
        await client.close()
    recorder.write()
    records = [json.loads(line) for line in (tmp_path / "1.jsonl").read_text().splitlines()]
    assert {"kind": "index", "db": f"{names}_novapulse_audit", "coll": "things", "key": ["org_id", "at"]} in records
    queries = [r for r in records if r["kind"] == "query"]
    assert [(q["op"], q["fields"]) for q in queries] == [("find", [["kind"]])]
    [item] = report(tmp_path)
    assert item.fields == ("kind",)


_SERVICE_CODE = """
async def service_queries(coll):
    await coll.find_one({"kind": "k"})
    await coll.find_one({})
"""


async def _service_queries(coll: Any) -> None:
    """Run two queries from a function whose code object says it lives in a service package."""
    namespace: dict[str, Any] = {}
    exec(compile(_SERVICE_CODE, "/repo/services/fake/src/novapulse_fake/repository.py", "exec"), namespace)  # noqa: S102
    await namespace["service_queries"](coll)


@pytest.mark.parametrize("flt", [{"kind": "k"}, {"$or": [{"org_id": "o"}, {"kind": "k"}]}])
def test_unserved_shapes_from_a_log_directory_fail_the_report(tmp_path: Path, flt: dict[str, object]) -> None:
    lines = [_index("things", "org_id"), {**_query("things", filter_shape(flt)), "where": "novapulse_x/repo.py:9"}]
    (tmp_path / "7.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    [item] = report(tmp_path)
    assert item.where == "novapulse_x/repo.py:9"
    assert item.fields == ("kind",)
