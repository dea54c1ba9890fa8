"""Every document shape and every read and write of the report service's database.

Collections:

- ``facts``: the data sets, one document per source event (``_id`` = event id, so a redelivered event is
  stored once): ``ds`` (data set = report type), ``org_id``, ``at_ms`` (when it happened, epoch ms),
  ``ingested_ms`` (when this service stored it), ``key`` (``<at_ms, 13 digits>|<event id>``: the unique,
  time-ordered sort and checkpoint key) and one ``v_<column>`` field per column.
- ``reports``: one document per report (shape in :meth:`Repository.insert_report`). Times compared in
  queries (leases, expiry) are integer epoch milliseconds (``*_ms``): the MongoDB-wire development server
  stores datetimes written by ``$set`` as strings.
- ``run_starts``: ``_id`` = ``<org id>|<run id>`` → ``at_ms``, the start of a workflow run not yet ended
  (its end row's ``duration_ms`` is computed from it; deleted at the end).
- ``dedup``: ``_id`` = deduplication key → the report it points to; the unique ``_id`` makes two identical
  requests racing each other share one report.
- ``refusals``: ``_id`` = ``<org id>|<request id>`` of a ``report.requested`` command the service refused →
  ``event_id`` (of its ``report.failed`` answer, fixed by the first handling), ``answered`` (the answer is in
  the outbox), ``refused_ms``: a redelivered command is answered once, under the same event id.

Every query on ``facts`` and ``reports`` from a request is scoped by organisation.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from novapulse_runtime.documents import Doc, by_index, count

IN_FLIGHT = ("queued", "running")


@dataclass(frozen=True)
class Fact:
    """One row of a data set: ``values`` by column name (``time`` is ``at_ms``)."""

    id: str
    dataset: str
    org_id: str
    at_ms: int
    values: dict[str, Any]


@dataclass(frozen=True)
class RowQuery:
    """Which rows of a data set a report holds: ``dataset`` rows of ``org_id`` with ``start_ms <= at_ms <
    end_ms``, stored no later than ``as_of_ms`` (the report's creation: the snapshot that makes a resumed
    run read the same rows), with each ``filters`` column equal to its value."""

    dataset: str
    org_id: str
    start_ms: int
    end_ms: int
    as_of_ms: int
    filters: dict[str, str] = field(default_factory=dict)

    def to_query(self, after: str = "") -> Doc:
        query: Doc = {
            "ds": self.dataset,
            "org_id": self.org_id,
            "at_ms": {"$gte": self.start_ms, "$lt": self.end_ms},
            "ingested_ms": {"$lte": self.as_of_ms},
        }
        for name, value in sorted(self.filters.items()):
            query[f"v_{name}"] = value
        if after:
            query["key"] = {"$gt": after}
        return query


@dataclass(frozen=True)
class Report:
    """A stored report. ``*_ms``: epoch milliseconds (0: not yet). ``params``: the normalised request
    (``start_ms``, ``end_ms``, ``time_zone``, ``filters``, ``csv_bom``, ``neutralize_formulas``)."""

    id: str
    org_id: str
    requested_by: str
    type: str
    format: str
    params: dict[str, Any]
    dedup_key: str
    status: str
    created_ms: int
    started_ms: int
    finished_ms: int
    estimated_total: int
    rows_done: int
    bytes_done: int
    rows_per_s: float
    parts: int
    checkpoint_key: str
    row_count: int
    sha256: str
    size: int
    expires_ms: int
    error: str
    attempts: int
    chunk_rows: int
    part_sizes: list[int]
    """Bytes of each part when the parts are the file (CSV, NDJSON); empty otherwise."""
    traceparent: str
    """W3C trace context of the request that asked for it (the worker's span continues that trace)."""
    request_id: str
    """The ``report.requested`` command's ``request_id`` (``""`` for API requests), echoed in its events."""

    @classmethod
    def from_doc(cls, d: Doc) -> Report:
        return cls(
            id=d["_id"],
            org_id=d["org_id"],
            requested_by=d["requested_by"],
            type=d["type"],
            format=d["format"],
            params=dict(d["params"]),
            dedup_key=d["dedup_key"],
            status=d["status"],
            created_ms=int(d["created_ms"]),
            started_ms=int(d.get("started_ms") or 0),
            finished_ms=int(d.get("finished_ms") or 0),
            estimated_total=int(d.get("estimated_total") or 0),
            rows_done=int(d.get("rows_done") or 0),
            bytes_done=int(d.get("bytes_done") or 0),
            rows_per_s=float(d.get("rows_per_s") or 0.0),
            parts=int(d.get("parts") or 0),
            checkpoint_key=str(d.get("checkpoint_key") or ""),
            row_count=int(d.get("row_count") or 0),
            sha256=str(d.get("sha256") or ""),
            size=int(d.get("size") or 0),
            expires_ms=int(d.get("expires_ms") or 0),
            error=str(d.get("error") or ""),
            attempts=int(d.get("attempts") or 0),
            chunk_rows=int(d.get("chunk_rows") or 0),
            part_sizes=[int(n) for n in d.get("part_sizes") or []],
            traceparent=str(d.get("traceparent") or ""),
            request_id=str(d.get("request_id") or ""),
        )

    def rows(self) -> RowQuery:
        p = self.params
        return RowQuery(self.type, self.org_id, p["start_ms"], p["end_ms"], self.created_ms, dict(p["filters"]))


def new_report_id(now_ms: int) -> str:
    """A fresh report id: ``rp_`` + 12 hex of the creation time in epoch ms + 20 random hex, so ids sort by
    creation."""
    return f"rp_{now_ms:012x}{secrets.token_hex(10)}"


def fact_key(at_ms: int, event_id: str) -> str:
    """The sort and checkpoint key of a row: time first (13 digits of epoch ms), then the event id."""
    return f"{at_ms:013d}|{event_id}"


def fact_doc(fact: Fact, ingested_ms: int) -> Doc:
    """The ``facts`` document of ``fact``."""
    doc: Doc = {
        "_id": fact.id,
        "ds": fact.dataset,
        "org_id": fact.org_id,
        "at_ms": fact.at_ms,
        "ingested_ms": ingested_ms,
        "key": fact_key(fact.at_ms, fact.id),
    }
    for name, value in fact.values.items():
        if name != "time" and value is not None:
            doc[f"v_{name}"] = value
    return doc


def column_field(column: str) -> str:
    """The ``facts`` field holding ``column``'s value: ``at_ms`` for ``time``, else ``v_<column>``."""
    return "at_ms" if column == "time" else f"v_{column}"


class Repository:
    """The report service's MongoDB collections (files live in the :class:`~.ports.FileStore`)."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.facts = db["facts"]
        self.reports = db["reports"]
        self.dedup = db["dedup"]
        self.run_starts = db["run_starts"]
        self.refusals = db["refusals"]

    async def ensure_indexes(self) -> None:
        """Create the indexes every query below relies on (idempotent). Compound indexes leave ``_id`` out:
        the MongoDB-wire development server refuses them."""
        await self.facts.create_index([("org_id", ASCENDING), ("ds", ASCENDING), ("key", ASCENDING)])
        await self.reports.create_index([("org_id", ASCENDING), ("created_ms", DESCENDING)])
        await self.reports.create_index([("status", ASCENDING), ("lease_until_ms", ASCENDING)])
        await self.reports.create_index([("status", ASCENDING), ("expires_ms", ASCENDING)])
        await self.refusals.create_index([("refused_ms", ASCENDING)])

    # data sets ----------------------------------------------------------------------------------------------

    async def add_fact(self, fact: Fact, ingested_ms: int) -> bool:
        """Store one row (idempotent: an event seen again is not stored twice). Returns whether it is new."""
        try:
            await self.facts.insert_one(fact_doc(fact, ingested_ms))
        except DuplicateKeyError:
            return False
        return True

    async def add_facts(self, facts: list[Fact], ingested_ms: int) -> None:
        """Store many rows at once (back-fills, tests, the benchmark); rows already stored are skipped."""
        if facts:
            with contextlib.suppress(BulkWriteError):  # duplicates only: the others are inserted (unordered)
                await self.facts.insert_many([fact_doc(f, ingested_ms) for f in facts], ordered=False)

    async def remember_run_start(self, org_id: str, run_id: str, at_ms: int) -> None:
        """Keep when a workflow run started (epoch ms) until its end (idempotent)."""
        await self.run_starts.update_one({"_id": f"{org_id}|{run_id}"}, {"$set": {"at_ms": at_ms}}, upsert=True)

    async def run_start(self, org_id: str, run_id: str) -> int | None:
        """When a workflow run started (epoch ms), or ``None`` when its start was not seen."""
        found = await self.run_starts.find_one({"_id": f"{org_id}|{run_id}"})
        return int(found["at_ms"]) if found else None

    async def forget_run_start(self, org_id: str, run_id: str) -> None:
        await self.run_starts.delete_one({"_id": f"{org_id}|{run_id}"})

    async def count_rows(self, rows: RowQuery) -> int:
        """How many rows ``rows`` holds, with the ``count`` command: exact with a query (MongoDB counts
        through the ``org_id, ds, key`` index; only a sharded cluster's orphans could make it drift, and the
        report re-checks while running). Not ``count_documents``: its ``$group`` pipeline takes the
        MongoDB-wire development server 13 s over 200k rows (past the client's 10 s socket timeout: a 503)
        where ``count`` takes 0.4 s."""
        return await count(self.facts, by_index(rows.to_query()))

    async def stream_rows(
        self, rows: RowQuery, after: str, batch_size: int, window_ms: int
    ) -> AsyncGenerator[list[Doc], None]:
        """Every row after key ``after`` (``""``: from the first), in key order, as lists of up to
        ``batch_size`` ``facts`` documents (a row's values are under :func:`column_field`, its key under
        ``key``).

        Read window by window of ``window_ms`` of row time, one cursor per window, ``batch_size`` documents
        per round trip (memory: one batch). Keys start with the time, so windows in time order keep key
        order; a server only ever sorts one window (the MongoDB-wire development server sorts before it
        answers, and sorting a whole 500k-row report outlasts the client's socket timeout). Whole documents
        are read: a projection makes the development server slower (it projects in Python after reading).
        """
        start = rows.start_ms
        if after:
            start = max(start, int(after.split("|", 1)[0]))
        while start < rows.end_ms:
            stop = min(rows.end_ms, start + max(1, window_ms))
            query = rows.to_query(after)
            query["at_ms"] = {"$gte": start, "$lt": stop}
            cursor = self.facts.find(by_index(query)).sort("key", ASCENDING).batch_size(batch_size)
            try:
                while batch := await cursor.to_list(batch_size):
                    after = batch[-1]["key"]
                    yield batch
            finally:
                await cursor.close()
            start = stop

    # reports ------------------------------------------------------------------------------------------------

    async def insert_report(
        self,
        *,
        report_id: str,
        org_id: str,
        requested_by: str,
        type_: str,
        format_: str,
        params: dict[str, Any],
        dedup_key: str,
        now_ms: int,
        estimated_total: int,
        traceparent: str = "",
        request_id: str = "",
    ) -> Report:
        """Store a new ``queued`` report (``report_id`` from :func:`new_report_id`)."""
        doc: Doc = {
            "_id": report_id,
            "org_id": org_id,
            "requested_by": requested_by,
            "type": type_,
            "format": format_,
            "params": params,
            "dedup_key": dedup_key,
            "status": "queued",
            "created_ms": now_ms,
            "updated_ms": now_ms,
            "estimated_total": estimated_total,
            "rows_done": 0,
            "bytes_done": 0,
            "parts": 0,
            "checkpoint_key": "",
            "lease_owner": "",
            "lease_until_ms": 0,
            "attempts": 0,
            "expires_ms": 0,
            "traceparent": traceparent,
            "request_id": request_id,
        }
        await self.reports.insert_one(doc)
        return Report.from_doc(doc)

    async def claim_dedup(self, dedup_key: str, report_id: str) -> str | None:
        """Point ``dedup_key`` at ``report_id``. Returns ``None`` when it did, else the id of the report the
        key already points to (the caller decides whether that one is still current)."""
        try:
            await self.dedup.insert_one({"_id": dedup_key, "report_id": report_id})
        except DuplicateKeyError:
            found = await self.dedup.find_one({"_id": dedup_key})
            return str(found["report_id"]) if found else ""
        return None

    async def dedup_holder(self, dedup_key: str) -> str | None:
        """The id of the report ``dedup_key`` points to, or ``None``."""
        found = await self.dedup.find_one({"_id": dedup_key})
        return str(found["report_id"]) if found else None

    async def move_dedup(self, dedup_key: str, old_id: str, new_id: str) -> bool:
        """Re-point ``dedup_key`` from ``old_id`` (no longer current) to ``new_id``; ``False`` when another
        request re-pointed it first."""
        result = await self.dedup.update_one(
            by_index({"_id": dedup_key, "report_id": old_id}), {"$set": {"report_id": new_id}}
        )
        return result.modified_count == 1

    # refused commands -------------------------------------------------------------------------------------

    async def refusal(self, org_id: str, request_id: str, event_id: str, now_ms: int) -> tuple[str, bool]:
        """Record the refusal of command ``request_id`` of ``org_id`` (idempotent): the event id of its
        answer (``event_id`` the first time, the stored one after) and whether the answer is written already."""
        key = f"{org_id}|{request_id}"
        try:
            await self.refusals.insert_one({"_id": key, "event_id": event_id, "answered": False, "refused_ms": now_ms})
        except DuplicateKeyError:
            doc = await self.refusals.find_one({"_id": key})
            if doc is not None:
                return str(doc["event_id"]), bool(doc.get("answered"))
        return event_id, False

    async def mark_answered(self, org_id: str, request_id: str) -> None:
        await self.refusals.update_one({"_id": f"{org_id}|{request_id}"}, {"$set": {"answered": True}})

    async def purge_refusals(self, before_ms: int) -> int:
        """Forget the refusals recorded before ``before_ms`` (epoch ms); returns how many."""
        return (await self.refusals.delete_many({"refused_ms": {"$lt": before_ms}})).deleted_count

    async def release_dedup(self, dedup_key: str, report_id: str) -> None:
        await self.dedup.delete_one(by_index({"_id": dedup_key, "report_id": report_id}))

    async def get_report(self, org_id: str, report_id: str) -> Report | None:
        doc = await self.reports.find_one(by_index({"_id": report_id, "org_id": org_id}))
        return Report.from_doc(doc) if doc else None

    async def get_any_report(self, report_id: str) -> Report | None:
        """A report by id alone: only for signed links, whose signature names the organisation."""
        doc = await self.reports.find_one({"_id": report_id})
        return Report.from_doc(doc) if doc else None

    async def delete_report(self, org_id: str, report_id: str) -> bool:
        return (await self.reports.delete_one(by_index({"_id": report_id, "org_id": org_id}))).deleted_count == 1

    async def list_reports(
        self, org_id: str, after: str | None, count: int, *, status: str | None, types: list[str]
    ) -> list[Report]:
        """Up to ``count`` reports of ``org_id`` of one of ``types``, newest first (ids sort by creation),
        after the id ``after``, optionally of one ``status``."""
        query: Doc = {"org_id": org_id}
        if after is not None:
            query["_id"] = {"$lt": after}
        if status:
            query["status"] = status
        query["type"] = {"$in": types}
        cursor = self.reports.find(by_index(query)).sort("_id", DESCENDING).limit(count)
        return [Report.from_doc(d) async for d in cursor]

    async def count_in_flight(self, org_id: str) -> int:
        """Queued and running reports of ``org_id`` (one indexed ``count`` per status)."""
        return sum([await count(self.reports, by_index({"org_id": org_id, "status": s})) for s in IN_FLIGHT])

    async def bytes_stored(self, org_id: str) -> int:
        """Bytes of the organisation's stored (succeeded, not yet expired) files."""
        total = 0
        async for d in self.reports.find(by_index({"org_id": org_id, "status": "succeeded"}), {"size": 1}):
            total += int(d.get("size") or 0)
        return total

    async def total_bytes_stored(self) -> int:
        """Bytes of every organisation's stored files (the ``bytes stored`` metric)."""
        total = 0
        async for d in self.reports.find(by_index({"status": "succeeded"}), {"size": 1}):
            total += int(d.get("size") or 0)
        return total

    async def cancel(self, org_id: str, report_id: str, now_ms: int) -> bool:
        """Mark a queued or running report ``cancelled`` (its worker stops at its next checkpoint)."""
        result = await self.reports.update_one(
            by_index({"_id": report_id, "org_id": org_id, "status": {"$in": list(IN_FLIGHT)}}),
            {"$set": {"status": "cancelled", "finished_ms": now_ms, "updated_ms": now_ms, "lease_until_ms": 0}},
        )
        return result.modified_count == 1

    # the worker's side: leases and checkpoints ---------------------------------------------------------------

    async def claim_next(self, owner: str, now_ms: int, lease_ms: int) -> Report | None:
        """Take the oldest queued report, or a running one whose lease has run out (its worker died), under
        a lease for ``owner`` until ``now_ms + lease_ms``."""
        doc = await self.reports.find_one_and_update(
            {"$or": [{"status": {"$eq": s}, "lease_until_ms": {"$lt": now_ms}} for s in IN_FLIGHT]},
            {
                "$set": {
                    "status": "running",
                    "lease_owner": owner,
                    "lease_until_ms": now_ms + lease_ms,
                    "started_ms": now_ms,
                    "updated_ms": now_ms,
                },
                "$inc": {"attempts": 1},
            },
            sort=[("created_ms", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )
        return Report.from_doc(doc) if doc else None

    async def checkpoint(self, report_id: str, owner: str, lease_until_ms: int, **fields: Any) -> bool:
        """Record progress (``parts``, ``checkpoint_key``, ``rows_done``, ``bytes_done``, ``rows_per_s``,
        ``estimated_total``) and renew the lease — only while ``owner`` still holds the running report.
        ``False``: the report was cancelled or taken over; the caller stops."""
        result = await self.reports.update_one(
            by_index({"_id": report_id, "status": "running", "lease_owner": owner}),
            {"$set": {**fields, "lease_until_ms": lease_until_ms, "updated_ms": lease_until_ms}},
        )
        return result.matched_count == 1

    async def finish(self, report_id: str, owner: str, now_ms: int, *, session: Any = None, **fields: Any) -> bool:
        """End a running report held by ``owner`` (``status`` and result fields in ``fields``)."""
        result = await self.reports.update_one(
            by_index({"_id": report_id, "status": "running", "lease_owner": owner}),
            {"$set": {**fields, "finished_ms": now_ms, "updated_ms": now_ms, "lease_until_ms": 0}},
            session=session,
        )
        return result.modified_count == 1

    async def heartbeat(self, report_id: str, owner: str, lease_until_ms: int) -> bool:
        """Renew ``owner``'s lease; ``False`` when the report is no longer running under it."""
        result = await self.reports.update_one(
            by_index({"_id": report_id, "status": "running", "lease_owner": owner}),
            {"$set": {"lease_until_ms": lease_until_ms}},
        )
        return result.matched_count == 1

    async def release(self, report_id: str, owner: str, retry_at_ms: int = 0) -> None:
        """Give a running report back (shutdown, or a failure worth retrying): any worker may take it from
        ``retry_at_ms`` on and resumes at its checkpoint."""
        await self.reports.update_one(
            by_index({"_id": report_id, "status": "running", "lease_owner": owner}),
            {"$set": {"lease_until_ms": retry_at_ms, "lease_owner": ""}},
        )

    async def due_for_expiry(self, now_ms: int, batch: int) -> list[Report]:
        cursor = self.reports.find(by_index({"status": "succeeded", "expires_ms": {"$lt": now_ms}})).limit(batch)
        return [Report.from_doc(d) async for d in cursor]

    async def mark_expired(self, report_id: str, now_ms: int) -> None:
        await self.reports.update_one(
            by_index({"_id": report_id, "status": "succeeded"}), {"$set": {"status": "expired", "updated_ms": now_ms}}
        )
