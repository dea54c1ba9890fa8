"""``documents.by_index``: plain scalar equalities become ``$eq`` (served by an index on nx-27017), nothing else
changes."""

from __future__ import annotations

import datetime as dt

import pytest

from novapulse_runtime.documents import by_index

pytestmark = pytest.mark.unit


def test_scalar_equalities_become_eq_and_the_rest_is_kept() -> None:
    when = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    flt = {
        "_id": "e1",
        "org_id": "o1",
        "n": 3,
        "ok": True,
        "gone": None,
        "state": {"$in": ["a", "b"]},
        "due": {"$lte": when},
        "tags": ["x"],
        "at": when,
    }
    assert by_index(flt) == {
        "_id": "e1",
        "org_id": {"$eq": "o1"},
        "n": {"$eq": 3},
        "ok": {"$eq": True},
        "gone": None,
        "state": {"$in": ["a", "b"]},
        "due": {"$lte": when},
        "tags": ["x"],
        "at": when,
    }
    assert flt["org_id"] == "o1"  # not changed in place


def test_logical_lists_are_rewritten_inside() -> None:
    flt = {"org_id": "o", "$or": [{"a": 1}, {"b": {"$gt": 2}}], "$and": [{"c": "x"}]}
    assert by_index(flt) == {
        "org_id": {"$eq": "o"},
        "$or": [{"a": {"$eq": 1}}, {"b": {"$gt": 2}}],
        "$and": [{"c": {"$eq": "x"}}],
    }
