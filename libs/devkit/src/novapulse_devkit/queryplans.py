"""Does the database serve a query by an index, or read the whole collection? (issue 15)

:class:`QueryRecorder` (a pymongo command listener) records the filter of every read and write a client sends;
:func:`plan` tells, for one of them, whether the server in use reads the whole collection to answer it. Tests
use both to prove that a service's worker and API paths never scan (``assert_no_scans``).

On MongoDB the answer is the server's ``explain`` of the filter (a ``COLLSCAN`` stage anywhere in the winning
plan). On nx-27017 (the MongoDB-wire server of tests, ``make run`` and the benchmarks; SQLite underneath) one
``explain`` is not enough, because the server translates a filter in two different ways:

- ``find`` (and the fallback of the others): the plan the server's own ``explain`` returns — SQLite's
  ``EXPLAIN QUERY PLAN`` rows, ``SCAN <coll>`` (whole table) or ``SEARCH <coll> USING INDEX ...``;
- ``update``, ``delete``, ``findAndModify`` and ``count``: neosqlite's ``SQLTranslator.translate_match``, which
  writes every plain equality on a field other than ``_id`` with an array-containment ``OR`` that no index
  serves (``{"f": v}`` scanned where ``{"f": {"$eq": v}}`` is served; see
  :func:`novapulse_runtime.documents.by_index`), and hands a filter it cannot translate (``$in`` on a field
  other than ``_id``) to the ``find`` path. The server's ``explain`` only covers ``find``, so this module
  translates such a filter with the same neosqlite the server runs (the ``nx-27017`` dependency) and asks
  SQLite's ``EXPLAIN QUERY PLAN`` of it over an empty in-memory copy of the collection carrying the server's
  indexes (read with ``listIndexes``).
- ``aggregate`` with a ``$group`` stage (what pymongo's ``count_documents`` sends) is evaluated by reading the
  whole collection into Python whatever the filter (3.6 s with 50k documents for a count matching one): a scan.

Measured with 50k documents on nx-27017 (issue 15): ``update_one({"org_id": o, "report_request": r, ...})``
145 ms → 0.8 ms with ``$eq``; a report claim ``find_one_and_update({"status": {"$in": [...]}, ...})`` 230 ms
→ 0.9 ms as an ``$or`` of ``$eq`` arms.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

Doc = dict[str, Any]

WRITE_OPS = ("update", "delete", "findAndModify", "count")
"""Commands nx-27017 translates with ``translate_match`` (not with the ``find`` path its ``explain`` shows)."""


@dataclass(frozen=True)
class Query:
    """One filter a client sent: ``op`` is the command (``find``, ``findAndModify``, ``update``, ``delete``,
    ``count``, ``aggregate``), ``coll`` the collection, ``sort`` the sort keys in order (``[(field, 1 | -1)]``),
    ``group``: an ``aggregate`` with a ``$group`` stage (``count_documents``)."""

    op: str
    coll: str
    filter: Doc
    sort: tuple[tuple[str, int], ...] = ()
    group: bool = False


@dataclass(frozen=True)
class Plan:
    """Whether ``query`` reads the whole collection (``scans``), with the plan's lines (``detail``) and which
    translation was asked (``via``: ``server explain``, ``translate_match``, ``aggregate $group``)."""

    query: Query
    scans: bool
    detail: tuple[str, ...]
    via: str


class QueryRecorder(monitoring.CommandListener):
    """Records the :class:`Query` of every ``find``, ``findAndModify``, ``update``, ``delete``, ``count`` and
    ``aggregate`` a client sends (pass it in the client's ``event_listeners``). ``queries`` keeps them in order;
    ``clear()`` forgets them (after a test's set-up)."""

    def __init__(self) -> None:
        self.queries: list[Query] = []

    def clear(self) -> None:
        self.queries.clear()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        cmd = event.command
        name = event.command_name
        if name not in ("find", "findAndModify", "update", "delete", "count", "aggregate"):
            return
        coll = str(cmd[name])
        if name == "find":
            self.queries.append(Query(name, coll, dict(cmd.get("filter") or {}), _sort(cmd.get("sort"))))
        elif name == "findAndModify":
            self.queries.append(Query(name, coll, dict(cmd.get("query") or {}), _sort(cmd.get("sort"))))
        elif name == "count":
            self.queries.append(Query(name, coll, dict(cmd.get("query") or {})))
        elif name in ("update", "delete"):
            for op in cmd.get("updates" if name == "update" else "deletes", []):
                self.queries.append(Query(name, coll, dict(op.get("q") or {})))
        else:
            pipeline = list(cmd.get("pipeline") or [])
            match = dict(pipeline[0]["$match"]) if pipeline and "$match" in pipeline[0] else {}
            group = any("$group" in stage for stage in pipeline)
            self.queries.append(Query(name, coll, match, group=group))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


def _sort(spec: Any) -> tuple[tuple[str, int], ...]:
    return tuple((str(k), int(v)) for k, v in dict(spec or {}).items())


async def plan(db: AsyncDatabase[Doc], query: Query) -> Plan:
    """How the server behind ``db`` answers ``query`` (see the module docstring).

    :raises pymongo.errors.OperationFailure: the server refused the ``explain`` or ``listIndexes``.
    """
    reply = await db.command({"explain": {"find": query.coll, "filter": query.filter}})
    winning = reply.get("queryPlanner", {}).get("winningPlan")
    if not isinstance(winning, list):  # MongoDB: a stage tree, the same for every command of this filter
        stages = tuple(_stages(winning))
        return Plan(query, "COLLSCAN" in stages, stages, "server explain")
    if query.op == "aggregate" and query.group:
        return Plan(query, True, ("nx-27017 evaluates $group over the whole collection",), "aggregate $group")
    if query.op in WRITE_OPS or query.op == "aggregate":
        indexes = [d async for d in await db[query.coll].list_indexes()]
        rows = _translated_plan(query, indexes)
        if rows is not None:
            return Plan(query, _sqlite_scans(rows, query.coll), tuple(rows), "translate_match")
    rows = [str(row.get("detail", "")) for row in winning]
    return Plan(query, _sqlite_scans(rows, query.coll), tuple(rows), "server explain")


async def plans(db: AsyncDatabase[Doc], queries: Iterable[Query]) -> list[Plan]:
    """:func:`plan` of each distinct query of ``queries`` (same command, collection, filter and sort)."""
    seen: set[str] = set()
    out = []
    for query in queries:
        key = repr((query.op, query.coll, sorted(query.filter.items(), key=lambda kv: kv[0]), query.sort))
        if key not in seen:
            seen.add(key)
            out.append(await plan(db, query))
    return out


async def scanning(db: AsyncDatabase[Doc], queries: Iterable[Query]) -> list[Plan]:
    """The plans of ``queries`` that read a whole collection (empty: every one is served by an index)."""
    return [p for p in await plans(db, queries) if p.scans]


async def assert_no_scans(db: AsyncDatabase[Doc], queries: Iterable[Query]) -> None:
    """:raises AssertionError: naming each of ``queries`` that reads a whole collection (:func:`describe`)."""
    found = await scanning(db, queries)
    if found:
        raise AssertionError(describe(found))


@contextlib.asynccontextmanager
async def recorded_database(mongo_url: str, name: str) -> AsyncIterator[tuple[AsyncDatabase[Doc], QueryRecorder]]:
    """The database ``name`` on a client of its own (``tz_aware``) whose commands a :class:`QueryRecorder`
    records, for a test to drive a repository through; the database is dropped and the client closed at exit."""
    recorder = QueryRecorder()
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongo_url, tz_aware=True, event_listeners=[recorder])
    try:
        yield client[name], recorder
    finally:
        await client.drop_database(name)
        await client.close()


def _stages(node: Any) -> Iterable[str]:
    if isinstance(node, Mapping):
        if "stage" in node:
            yield str(node["stage"])
        for value in node.values():
            yield from _stages(value)
    elif isinstance(node, list):
        for item in node:
            yield from _stages(item)


def _sqlite_scans(rows: Iterable[str], coll: str) -> bool:
    """``SCAN <coll>`` (with or without ``USING INDEX``: a walk of every entry) reads the whole table."""
    return any(row == f"SCAN {coll}" or row.startswith(f"SCAN {coll} ") for row in rows)


def _translated_plan(query: Query, indexes: Sequence[Mapping[str, Any]]) -> list[str] | None:
    """SQLite's plan of ``query`` as nx-27017 translates an update, delete, findAndModify or count, over an
    empty in-memory collection with the same indexes; ``None`` when neosqlite cannot translate the filter
    (nx-27017 then answers through its ``find`` path)."""
    from neosqlite import Connection
    from neosqlite.sql_utils import quote_table_name

    conn = Connection(":memory:")
    try:
        coll = conn[query.coll]
        for index in indexes:
            key = dict(index.get("key") or {})
            if list(key) == ["_id"]:
                continue
            coll.create_index(list(key.items()), unique=bool(index.get("unique")), sparse=bool(index.get("sparse")))
        where, params = coll.query_engine.sql_translator.translate_match(query.filter)
        if not where:  # nx-27017 answers through its find path (its update_one and find_one_and_update do)
            return None
        order = coll.query_engine.helpers._build_sort_clause(dict(query.sort)) if query.sort else ""
        # the SQL nx-27017 itself builds (quoted name, bound parameters), over a private in-memory database
        sql = f"EXPLAIN QUERY PLAN SELECT id FROM {quote_table_name(query.coll)} {where}{order}"  # noqa: S608
        try:
            found = conn.db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:  # a parameter SQLite cannot bind: report it rather than guess
            return [f"EXPLAIN failed: {exc}"]
        return [str(row[-1]) for row in found]
    finally:
        conn.close()


def describe(found: Iterable[Plan]) -> str:
    """One line per plan (for an assertion message)."""
    return "\n".join(
        f"{p.query.op} {p.query.coll} {p.query.filter} sort={list(p.query.sort)} [{p.via}]: {list(p.detail)}"
        for p in found
    )
