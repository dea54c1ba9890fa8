"""Every document shape and every read and write of the workflow service's database.

Collections (every query is scoped by organisation, except the worker's claim of due runs):

- ``definitions``: ``_id`` (``wd_…``), ``org_id``, ``name``, ``version`` (current), ``enabled``,
  ``deleted``, ``trigger_type``, ``created_ms``, ``updated_ms``.
- ``versions`` (insert-only): ``_id`` = ``<definition id>:<version>``, ``definition_id``, ``org_id``,
  ``version``, ``body`` (the definition as JSON), ``created_ms``, ``created_by``.
- ``runs``: ``_id`` (``wr_…``), ``org_id``, ``definition_id``, ``version``, ``status``, ``trigger`` (the
  trigger event as JSON), ``trigger_event_id``, ``trigger_key`` (unique: ``<definition id>:<event id>``, so a
  redelivered event starts no second run), ``step`` (current key), ``attempt`` (of the current step, from 1),
  ``gen`` (attempt generation: +1 at every attempt of any step; effect ids derive from it), ``due_ms``,
  ``lease_owner``, ``lease_until_ms``, ``timer_gen``/``timer_ms`` (the deadline of a delay or wait of
  generation ``timer_gen``), ``waiting_for`` (event type of the wait in progress, ``""`` else),
  ``listens`` (types the run's waits and ``cancel_on`` listen for; ``listening``: the list is not empty, so
  the consumer reads only such runs), ``debounce_key``/``debounce_seq`` (the trigger's key and number, see
  ``debounces``), ``report_request`` (the request id a ``report`` step waits on),
  ``started`` (the started event is written), ``traceparent`` (the run's span),
  ``transitions``, ``error``, ``rerun_of``, ``created_ms``, ``updated_ms``, ``finished_ms``.
- ``journal`` (insert-only): one document per step attempt, ``_id`` = ``<run id>:<gen, 6 digits>``:
  ``run_id``, ``org_id``, ``key``, ``type``, ``attempt``, ``gen``, ``status`` (``completed``, ``failed``,
  ``reused``), ``output``, ``next``, ``error``, ``effect_id``, ``started_ms``, ``finished_ms``.
- ``received`` (insert-only): events kept for a run's waits, ``_id`` = ``<run id>:<event id>``.
- ``replies`` (insert-only): the report service's answers to ``report`` steps, ``_id`` = the request id
  (``data.request_id``, the step attempt's effect id), ``org_id``, ``event`` (as JSON), ``received_ms``; kept
  whether or not the run already sleeps on it, so an answer faster than the run's sleep is not lost.
- ``debounces``: one document per debounce key (``_id`` = ``<definition id>:<key value>``): ``seq`` (the
  triggers of the key numbered so far), ``current_seq`` and ``run_id`` (the newest trigger's run, the only
  one of the key that may still start), ``updated_ms``. Every change is one conditional
  ``find_one_and_update``, so whichever workers handle a key's triggers, exactly one waiting run survives.

Times are integer epoch milliseconds (the MongoDB-wire development server stores datetimes written by
``$set`` as strings; docs/architecture.md). Lists of sub-documents live in insert-only collections (its
``$push`` stores them as JSON strings), and no compound index includes ``_id``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from novapulse_runtime.clock import now_ms
from novapulse_runtime.documents import Doc, by_index, count

DUPLICATE_KEY = 11000
"""MongoDB's error code of a duplicate key."""
ACTIVE = ("pending", "running", "waiting")
"""Statuses of a run that is not finished."""
FINISHED = ("completed", "failed", "cancelled")
NEVER_DUE_MS = 2**53
"""The ``due_ms`` of a finished run: out of the range every claim scans (``due_ms <= now``), so the claim's
index walk does not grow with the runs kept for their retention."""
ENDED: Doc = {"due_ms": NEVER_DUE_MS, "listening": False}
"""What every end of a run writes besides its status: no longer due, no longer listening for events."""


@dataclass(frozen=True)
class DefinitionRecord:
    """A definition's current state. Times: epoch ms."""

    id: str
    org_id: str
    name: str
    version: int
    enabled: bool
    trigger_type: str
    created_ms: int
    updated_ms: int

    @classmethod
    def from_doc(cls, doc: Doc) -> DefinitionRecord:
        return cls(
            doc["_id"],
            doc["org_id"],
            doc["name"],
            int(doc["version"]),
            bool(doc["enabled"]),
            doc["trigger_type"],
            int(doc["created_ms"]),
            int(doc["updated_ms"]),
        )


@dataclass(frozen=True)
class Run:
    """A run as stored (see the module docstring for each field)."""

    id: str
    org_id: str
    definition_id: str
    version: int
    status: str
    trigger: dict[str, Any]
    trigger_event_id: str
    step: str
    attempt: int
    gen: int
    due_ms: int
    timer_gen: int
    timer_ms: int
    started: bool
    transitions: int
    error: str
    rerun_of: str
    created_ms: int
    updated_ms: int
    finished_ms: int
    lease_owner: str = ""
    concurrency_key: str = ""
    concurrency_limit: int = 0
    debounce_key: str = ""
    debounce_seq: int = 0
    """The run's trigger number among its debounce key's triggers (``Repository.next_debounce_seq``)."""
    prior_status: str = ""
    """The status the run had before this worker claimed it (``Repository.claim_due``)."""
    traceparent: str = ""
    """W3C trace context of the run's span (``tracing.run_span``): every step's span is its child."""
    fresh: bool = False
    """No worker has advanced the run since it was inserted (claimed ``pending`` with no lease holder, at
    generation 0, not started, no transition): its journal is empty and need not be read."""

    @classmethod
    def from_doc(cls, doc: Doc) -> Run:
        return cls(
            id=doc["_id"],
            org_id=doc["org_id"],
            definition_id=doc["definition_id"],
            version=int(doc["version"]),
            status=doc["status"],
            trigger=doc.get("trigger") or {},
            trigger_event_id=doc.get("trigger_event_id", ""),
            step=doc["step"],
            attempt=int(doc.get("attempt", 1)),
            gen=int(doc.get("gen", 0)),
            due_ms=int(doc.get("due_ms", 0)),
            timer_gen=int(doc.get("timer_gen", -1)),
            timer_ms=int(doc.get("timer_ms") or 0),
            started=bool(doc.get("started", False)),
            transitions=int(doc.get("transitions", 0)),
            error=doc.get("error", ""),
            rerun_of=doc.get("rerun_of", ""),
            created_ms=int(doc["created_ms"]),
            updated_ms=int(doc.get("updated_ms") or doc["created_ms"]),
            finished_ms=int(doc.get("finished_ms", 0)),
            lease_owner=doc.get("lease_owner", ""),
            concurrency_key=doc.get("concurrency_key", ""),
            concurrency_limit=int(doc.get("concurrency_limit") or 0),
            debounce_key=doc.get("debounce_key", ""),
            debounce_seq=int(doc.get("debounce_seq") or 0),
            traceparent=doc.get("traceparent") or "",
        )


@dataclass(frozen=True)
class Attempt:
    """One journaled step attempt."""

    run_id: str
    key: str
    type: str
    attempt: int
    gen: int
    status: str
    output: Any
    next: str
    error: str
    effect_id: str
    started_ms: int
    finished_ms: int

    @classmethod
    def from_doc(cls, doc: Doc) -> Attempt:
        return cls(
            doc["run_id"],
            doc["key"],
            doc["type"],
            int(doc["attempt"]),
            int(doc["gen"]),
            doc["status"],
            doc.get("output"),
            doc.get("next", ""),
            doc.get("error", ""),
            doc.get("effect_id", ""),
            int(doc["started_ms"]),
            int(doc["finished_ms"]),
        )


@dataclass
class RunFilter:
    """Filters of the runs list (all optional); times in epoch ms."""

    definition_id: str | None = None
    status: str | None = None
    trigger_event_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Repository:
    """The workflow service's MongoDB collections."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.definitions = db["definitions"]
        self.versions = db["versions"]
        self.runs = db["runs"]
        self.journal = db["journal"]
        self.received = db["received"]
        self.keys = db["keys"]
        self.slots = db["slots"]
        self.replies = db["replies"]
        self.app_events = db["app_events"]
        self.org_slots = db["org_slots"]
        self.debounces = db["debounces"]

    async def ensure_indexes(self) -> None:
        """Create the indexes every query below relies on (idempotent)."""
        await self.definitions.create_index([("org_id", ASCENDING)])
        await self.definitions.create_index([("trigger_type", ASCENDING)])
        await self.versions.create_index([("definition_id", ASCENDING)])
        await self.runs.create_index([("trigger_key", ASCENDING)], unique=True)
        await self.runs.create_index([("org_id", ASCENDING)])
        await self.runs.create_index([("due_ms", ASCENDING)])
        await self.runs.create_index([("status", ASCENDING)])
        await self.runs.create_index([("finished_ms", ASCENDING)])
        await self.runs.create_index([("debounce_key", ASCENDING)])
        await self.runs.create_index([("listening", ASCENDING)])
        await self.runs.create_index([("report_request", ASCENDING)])
        await self.replies.create_index([("received_ms", ASCENDING)])
        await self.app_events.create_index([("received_ms", ASCENDING)])
        await self.runs.create_index([("trigger_event_id", ASCENDING)])
        await self.debounces.create_index([("updated_ms", ASCENDING)])
        await self.slots.create_index([("holder", ASCENDING)])
        await self.org_slots.create_index([("org_id", ASCENDING)])
        await self.org_slots.create_index([("owner", ASCENDING)])
        await self.journal.create_index([("run_id", ASCENDING)])
        await self.received.create_index([("run_id", ASCENDING)])

    # definitions -------------------------------------------------------------------------------------------

    async def count_definitions(self, org_id: str) -> int:
        return await count(self.definitions, by_index({"org_id": org_id, "deleted": False}))

    async def insert_definition(self, org_id: str, user_id: str, body: Doc, trigger_type: str) -> DefinitionRecord:
        """A new definition (version 1, enabled) with id ``wd_`` + 32 hex."""
        now = now_ms()
        def_id = f"wd_{secrets.token_hex(16)}"
        await self.versions.insert_one(
            {
                "_id": f"{def_id}:1",
                "definition_id": def_id,
                "org_id": org_id,
                "version": 1,
                "body": body,
                "created_ms": now,
                "created_by": user_id,
            }
        )
        doc: Doc = {
            "_id": def_id,
            "org_id": org_id,
            "name": body["name"],
            "version": 1,
            "enabled": True,
            "deleted": False,
            "trigger_type": trigger_type,
            "created_ms": now,
            "updated_ms": now,
        }
        await self.definitions.insert_one(doc)
        return DefinitionRecord.from_doc(doc)

    async def add_version(
        self, org_id: str, def_id: str, user_id: str, body: Doc, trigger_type: str, after: int
    ) -> DefinitionRecord | None:
        """Store version ``after + 1`` and make it current; ``None`` when another change made that version
        first (the caller's view is stale)."""
        now = now_ms()
        version = after + 1
        try:
            await self.versions.insert_one(
                {
                    "_id": f"{def_id}:{version}",
                    "definition_id": def_id,
                    "org_id": org_id,
                    "version": version,
                    "body": body,
                    "created_ms": now,
                    "created_by": user_id,
                }
            )
        except DuplicateKeyError:
            return None
        await self.definitions.update_one(
            by_index({"_id": def_id, "org_id": org_id, "version": after}),
            {"$set": {"version": version, "name": body["name"], "trigger_type": trigger_type, "updated_ms": now}},
        )
        return await self.get_definition(org_id, def_id)

    async def get_definition(self, org_id: str, def_id: str) -> DefinitionRecord | None:
        doc = await self.definitions.find_one(by_index({"_id": def_id, "org_id": org_id, "deleted": False}))
        return DefinitionRecord.from_doc(doc) if doc else None

    async def get_version(self, org_id: str, def_id: str, version: int) -> Doc | None:
        """The body of one version (``None`` when there is none)."""
        doc = await self.versions.find_one(by_index({"_id": f"{def_id}:{version}", "org_id": org_id}))
        return doc["body"] if doc else None

    async def list_definitions(self, org_id: str, after: str | None, count: int) -> list[DefinitionRecord]:
        """Up to ``count`` definitions, newest id first, after the id ``after``."""
        query: Doc = {"org_id": org_id, "deleted": False}
        if after is not None:
            query["_id"] = {"$lt": after}
        cursor = self.definitions.find(by_index(query)).sort("_id", DESCENDING).limit(count)
        return [DefinitionRecord.from_doc(d) async for d in cursor]

    async def set_enabled(self, org_id: str, def_id: str, enabled: bool) -> bool:
        result = await self.definitions.update_one(
            by_index({"_id": def_id, "org_id": org_id, "deleted": False}),
            {"$set": {"enabled": enabled, "updated_ms": now_ms()}},
        )
        return result.matched_count == 1

    async def delete_definition(self, org_id: str, def_id: str) -> bool:
        """Mark deleted (versions stay: runs in flight keep theirs)."""
        result = await self.definitions.update_one(
            by_index({"_id": def_id, "org_id": org_id, "deleted": False}),
            {"$set": {"deleted": True, "enabled": False, "updated_ms": now_ms()}},
        )
        return result.matched_count == 1

    async def triggered_by(self, org_id: str, type_: str) -> list[DefinitionRecord]:
        """Enabled definitions of ``org_id`` whose trigger is ``type_``."""
        cursor = self.definitions.find(
            by_index({"org_id": org_id, "trigger_type": type_, "enabled": True, "deleted": False})
        )
        return [DefinitionRecord.from_doc(d) async for d in cursor]

    # runs --------------------------------------------------------------------------------------------------

    async def insert_run(
        self,
        org_id: str,
        def_id: str,
        version: int,
        trigger: Doc,
        first_step: str,
        listens: list[str],
        *,
        trigger_key: str | None = None,
        rerun_of: str = "",
        gen: int = 0,
        held: bool = False,
        delay_ms: int = 0,
        debounce_key: str = "",
        debounce_seq: int = 0,
        concurrency_key: str = "",
        concurrency_limit: int = 0,
        traceparent: str = "",
    ) -> Run | None:
        """A new pending run, due now (``held``: not due until :meth:`release_run`); ``None`` when a run for
        ``trigger_key`` exists (the same trigger event again: idempotent)."""
        now = now_ms()
        run_id = f"wr_{secrets.token_hex(16)}"
        doc: Doc = {
            "_id": run_id,
            "org_id": org_id,
            "definition_id": def_id,
            "version": version,
            "status": "pending",
            "trigger": trigger,
            "trigger_event_id": trigger.get("id", ""),
            "trigger_key": trigger_key or f"{def_id}:{trigger.get('id', '')}:{run_id}",
            "step": first_step,
            "attempt": 1,
            "gen": gen,
            "due_ms": now + (10 * 365 * 86_400_000 if held else delay_ms),
            "debounce_key": debounce_key,
            "debounce_seq": debounce_seq,
            "concurrency_key": concurrency_key,
            "concurrency_limit": concurrency_limit,
            "traceparent": traceparent,
            "lease_owner": "",
            "lease_until_ms": 0,
            "timer_gen": -1,
            "timer_ms": 0,
            "waiting_for": "",
            "listens": listens,
            "listening": bool(listens),
            "started": False,
            "transitions": 0,
            "error": "",
            "rerun_of": rerun_of,
            "created_ms": now,
            "updated_ms": now,
            "finished_ms": 0,
        }
        try:
            await self.runs.insert_one(doc)
        except DuplicateKeyError:
            return None
        return Run.from_doc(doc)

    async def release_run(self, run_id: str) -> None:
        """Make a run inserted ``held`` due now."""
        await self.runs.update_one(by_index({"_id": run_id, "status": "pending"}), {"$set": {"due_ms": now_ms()}})

    async def get_run(self, org_id: str, run_id: str) -> Run | None:
        doc = await self.runs.find_one(by_index({"_id": run_id, "org_id": org_id}))
        return Run.from_doc(doc) if doc else None

    async def list_runs(self, org_id: str, filters: RunFilter, after: str | None, count: int) -> list[Run]:
        """Up to ``count`` runs, newest id first, after the id ``after``, matching ``filters``."""
        query: Doc = {"org_id": org_id}
        if filters.definition_id:
            query["definition_id"] = filters.definition_id
        if filters.status:
            query["status"] = filters.status
        if filters.trigger_event_id:
            query["trigger_event_id"] = filters.trigger_event_id
        created: Doc = {}
        if filters.since_ms is not None:
            created["$gte"] = filters.since_ms
        if filters.until_ms is not None:
            created["$lte"] = filters.until_ms
        if created:
            query["created_ms"] = created
        if after is not None:
            query["_id"] = {"$lt": after}
        cursor = self.runs.find(by_index(query)).sort("_id", DESCENDING).limit(count)
        return [Run.from_doc(d) async for d in cursor]

    async def cancel_run(self, org_id: str, run_id: str, reason: str = "cancelled") -> Run | None:
        """Mark an unfinished run cancelled (its lease holder's next write is refused); ``None`` when the run
        had finished already."""
        now = now_ms()
        result = await self.runs.update_one(
            by_index({"_id": run_id, "org_id": org_id, "status": {"$in": list(ACTIVE)}}),
            {
                "$set": {
                    "status": "cancelled",
                    **ENDED,
                    "finished_ms": now,
                    "updated_ms": now,
                    "error": reason[:500],
                    "waiting_for": "",
                }
            },
        )
        if result.modified_count != 1:
            return None
        await self.free_slots(run_id)
        return await self.get_run(org_id, run_id)

    async def claim_due(self, owner: str, lease_ms: int, skip_orgs: Sequence[str] = ()) -> Run | None:
        """Take the lease of the run due soonest whose lease is free or ran out (its holder died), of an
        organisation not in ``skip_orgs`` (those at their cap of runs in flight)."""
        now = now_ms()
        query: Doc = {"status": {"$in": list(ACTIVE)}, "due_ms": {"$lte": now}, "lease_until_ms": {"$lt": now}}
        if skip_orgs:
            query["org_id"] = {"$nin": list(skip_orgs)}
        claimed = {"lease_owner": owner, "lease_until_ms": now + lease_ms, "status": "running"}
        doc = await self.runs.find_one_and_update(
            query, {"$set": claimed}, sort=[("due_ms", ASCENDING)], return_document=ReturnDocument.BEFORE
        )
        if doc is None:
            return None
        fresh = (
            doc["status"] == "pending"
            and not doc.get("lease_owner")
            and int(doc.get("gen", 0)) == 0
            and not doc.get("started")
            and int(doc.get("transitions", 0)) == 0
        )
        return replace(Run.from_doc({**doc, **claimed}), prior_status=doc["status"], fresh=fresh)

    async def unclaim(self, run: Run, owner: str, due_ms: int) -> bool:
        """Give back a run ``owner`` claimed but will not advance (its organisation is at its cap of runs in
        flight): its status before the claim, no lease, due again at ``due_ms`` (epoch ms)."""
        return await self.update_held(
            run.id,
            owner,
            {"status": run.prior_status or "pending", "lease_owner": "", "lease_until_ms": 0, "due_ms": due_ms},
        )

    # organisation slots: the global cap of runs in flight per organisation --------------------------------

    async def take_org_slot(self, org_id: str, cap: int, owner: str, lease_ms: int) -> str | None:
        """Take one of the ``cap`` slots of ``org_id`` for the worker ``owner`` for ``lease_ms`` (renewed by
        :meth:`renew_org_slots`): a free one (released, or its holder's lease ran out), else a new one while
        fewer than ``cap`` exist. Atomic per slot (a conditional update, or an insert whose id is the slot's
        number), so the organisation's runs in flight across every worker never exceed ``cap``. Returns the
        slot's id, or ``None`` when all ``cap`` are held."""
        now = now_ms()
        lease = {"owner": owner, "until_ms": now + lease_ms}
        doc = await self.org_slots.find_one_and_update(
            by_index({"org_id": org_id, "until_ms": {"$lt": now}, "i": {"$lt": cap}}), {"$set": lease}
        )
        if doc is not None:
            return str(doc["_id"])
        existing = await count(self.org_slots, by_index({"org_id": org_id}))
        for i in range(existing, cap):
            slot_id = f"{org_id}#{i}"
            try:
                await self.org_slots.insert_one({"_id": slot_id, "org_id": org_id, "i": i, **lease})
            except DuplicateKeyError:  # another worker made slot i first
                continue
            return slot_id
        return None

    async def renew_org_slots(self, owner: str, lease_ms: int) -> None:
        """Extend every organisation slot ``owner`` holds to now + ``lease_ms``."""
        await self.org_slots.update_many(by_index({"owner": owner}), {"$set": {"until_ms": now_ms() + lease_ms}})

    async def free_org_slots(self, owner: str, slot_ids: Sequence[str]) -> None:
        """Give back the slots ``slot_ids`` ``owner`` holds."""
        await self.org_slots.update_many(
            by_index({"_id": {"$in": list(slot_ids)}, "owner": owner}), {"$set": {"owner": "", "until_ms": 0}}
        )

    async def update_held(self, run_id: str, owner: str, changes: Doc) -> bool:
        """Write ``changes`` to a run ``owner`` still holds and that is not finished (nor cancelled): the
        fence of every write of the engine. False when the lease or the run is gone."""
        changes = {**changes, "updated_ms": now_ms()}
        result = await self.runs.update_one(
            by_index({"_id": run_id, "lease_owner": owner, "status": {"$in": list(ACTIVE)}}), {"$set": changes}
        )
        return result.matched_count == 1

    async def hold_key(self, key_id: str, holder: str, window_ms: int) -> bool:
        """Hold the idempotency key ``key_id`` for ``holder`` (a trigger event id) for ``window_ms``: True when
        it was free, expired, or held by the same holder already (a redelivered event); False when another
        holder has it within its window.

        The ``_id`` and the ``$or`` are two arms of an ``$and`` (the same filter on MongoDB): nx-27017 writes
        ``{"_id": k, "$or": [a, b]}`` as ``_id = k AND a OR b`` without brackets, which matched (and
        overwrote) another key's document held by the same holder."""
        now = now_ms()
        try:
            await self.keys.update_one(
                {"$and": [{"_id": key_id}, by_index({"$or": [{"until_ms": {"$lt": now}}, {"holder": holder}]})]},
                {"$set": {"holder": holder, "until_ms": now + window_ms}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return True

    async def next_debounce_seq(self, debounce_key: str) -> int:
        """Number a new trigger of ``debounce_key``: 1, 2, … in the order the database sees them (an atomic
        ``$inc`` on the key's document, made on the first trigger)."""
        for _ in range(3):
            try:
                doc = await self.debounces.find_one_and_update(
                    {"_id": debounce_key},
                    {"$inc": {"seq": 1}, "$set": {"updated_ms": now_ms()}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:  # two first triggers upserted at once: the loser increments next round
                continue
            if doc is not None:
                return int(doc["seq"])
        raise RuntimeError(f"could not number a trigger of debounce key {debounce_key!r}")

    async def make_current(self, debounce_key: str, seq: int, run_id: str) -> str | None:
        """Make ``run_id`` (trigger number ``seq``) the run of ``debounce_key`` that may start, unless a newer
        trigger's run is current already. Returns the run that lost: the one replaced, or ``run_id`` itself
        when a newer one is current; ``None`` when none (first trigger, or ``run_id`` is current already: a
        redelivered trigger). One conditional update, so concurrent triggers on any workers agree. Its ``_id`` and
        ``$or`` are arms of an ``$and``: nx-27017 wrote ``{"_id": k, "$or": [...]}`` without brackets, so the
        update could take another key's document that had no ``current_seq`` yet (see :meth:`hold_key`)."""
        doc = await self.debounces.find_one_and_update(
            {
                "$and": [
                    {"_id": debounce_key},
                    {"$or": [{"current_seq": {"$lt": seq}}, {"current_seq": {"$exists": False}}]},
                ]
            },
            {"$set": {"current_seq": seq, "run_id": run_id, "updated_ms": now_ms()}},
            return_document=ReturnDocument.BEFORE,
        )
        if doc is not None:
            replaced = str(doc.get("run_id") or "")
            return replaced if replaced and replaced != run_id else None
        doc = await self.debounces.find_one({"_id": debounce_key})
        return None if doc is not None and doc.get("run_id") == run_id else run_id

    async def cancel_debounced(self, run_id: str) -> bool:
        """Cancel (``debounced``) ``run_id`` if it has not started (a run already under way keeps going)."""
        now = now_ms()
        result = await self.runs.update_one(
            by_index({"_id": run_id, "status": "pending", "started": False}),
            {"$set": {"status": "cancelled", **ENDED, "error": "debounced", "finished_ms": now, "updated_ms": now}},
        )
        return result.modified_count == 1

    async def run_by_trigger_key(self, trigger_key: str) -> Run | None:
        doc = await self.runs.find_one(by_index({"trigger_key": trigger_key}))
        return Run.from_doc(doc) if doc else None

    async def take_slot(self, concurrency_key: str, limit: int, run_id: str) -> bool:
        """Take one of the ``limit`` slots of ``concurrency_key`` for ``run_id`` (True when it holds one,
        possibly from before a crash)."""
        if await self.slots.find_one(by_index({"key": concurrency_key, "holder": run_id})):
            return True
        for i in range(limit):
            try:
                result = await self.slots.update_one(
                    by_index({"_id": f"{concurrency_key}#{i}", "holder": ""}),
                    {"$set": {"holder": run_id, "key": concurrency_key}},
                    upsert=True,
                )
            except DuplicateKeyError:
                continue
            if result.matched_count == 1 or result.upserted_id is not None:
                return True
        return False

    async def free_slots(self, run_id: str) -> None:
        """Give back the concurrency slots ``run_id`` holds."""
        await self.slots.update_many(by_index({"holder": run_id}), {"$set": {"holder": ""}})

    async def renew_lease(self, run_id: str, owner: str, lease_ms: int) -> bool:
        """Extend the lease ``owner`` holds on a running run to now + ``lease_ms``; False when it is gone."""
        result = await self.runs.update_one(
            by_index({"_id": run_id, "lease_owner": owner, "status": "running"}),
            {"$set": {"lease_until_ms": now_ms() + lease_ms}},
        )
        return result.matched_count == 1

    async def wake_waiting(self, org_id: str, type_: str) -> int:
        """Make the runs of ``org_id`` waiting for ``type_`` due now; returns how many."""
        result = await self.runs.update_many(
            by_index({"org_id": org_id, "waiting_for": type_, "status": "waiting"}), {"$set": {"due_ms": now_ms()}}
        )
        return result.modified_count

    async def listening_runs(self, org_id: str, type_: str) -> list[Run]:
        """The unfinished runs of ``org_id`` whose waits or ``cancel_on`` listen for ``type_`` (a run stops
        ``listening`` when it ends, so the index on it keeps this look small)."""
        return [run for run, listens in await self.all_listening_runs(org_id) if type_ in listens]

    async def all_listening_runs(self, org_id: str) -> list[tuple[Run, list[str]]]:
        """Every unfinished run of ``org_id`` whose waits or ``cancel_on`` listen for events, with the types
        they listen for."""
        cursor = self.runs.find(by_index({"listening": True, "org_id": org_id, "status": {"$in": list(ACTIVE)}}))
        return [(Run.from_doc(d), list(d.get("listens") or [])) async for d in cursor]

    async def count_active_and_timers(self) -> tuple[int, int]:
        """(unfinished runs, runs waiting on a delay or wait deadline) of every organisation."""
        by_status = {s: await count(self.runs, by_index({"status": s})) for s in ACTIVE}
        return sum(by_status.values()), by_status["waiting"]

    async def purge_finished(self, before_ms: int, batch: int) -> int:
        """Delete up to ``batch`` runs finished before ``before_ms`` (epoch ms), with their journal and kept
        events; returns how many runs went."""
        cursor = self.runs.find(
            {"status": {"$in": list(FINISHED)}, "finished_ms": {"$gt": 0, "$lt": before_ms}}, {"_id": 1}
        ).limit(batch)
        ids = [d["_id"] async for d in cursor]
        if not ids:
            return 0
        # one $eq arm per run (the same filter as $in on MongoDB): nx-27017 serves each arm by the run_id index,
        # where $in on a field other than _id read the whole journal (108-117 -> 8-10 ms per 100 runs, 50k attempts)
        of_runs = {"$or": [{"run_id": {"$eq": i}} for i in ids]}
        await self.journal.delete_many(of_runs)
        await self.received.delete_many(of_runs)
        return (await self.runs.delete_many({"_id": {"$in": ids}})).deleted_count

    async def purge_answers_and_posts(self, before_ms: int) -> int:
        """Delete the report answers and posted application events received before ``before_ms`` (epoch ms),
        and the debounce keys last touched before it; returns how many."""
        replies = await self.replies.delete_many({"received_ms": {"$lt": before_ms}})
        events = await self.app_events.delete_many({"received_ms": {"$lt": before_ms}})
        # a debounce key untouched since (its last run started or finished long ago) starts over at 1
        keys = await self.debounces.delete_many({"updated_ms": {"$lt": before_ms}})
        return replies.deleted_count + events.deleted_count + keys.deleted_count

    # application events ------------------------------------------------------------------------------------

    async def insert_app_event(self, org_id: str, event: Doc, fingerprint: str, user_id: str) -> tuple[Doc, bool]:
        """Keep a posted application event (``event``: the trigger event as JSON) under ``<org>:<event id>``
        with the request's ``fingerprint``; returns the document kept and whether it is new — the earlier one
        (not new) when that event id was posted before (compare its ``fingerprint``)."""
        doc: Doc = {
            "_id": f"{org_id}:{event['id']}",
            "org_id": org_id,
            "event": event,
            "fingerprint": fingerprint,
            "posted_by": user_id,
            "received_ms": now_ms(),
        }
        try:
            await self.app_events.insert_one(doc)
        except DuplicateKeyError:
            earlier = await self.app_events.find_one(by_index({"_id": doc["_id"], "org_id": org_id}))
            if earlier is not None:
                return earlier, False
        return doc, True

    async def runs_of_event(self, org_id: str, event_id: str, limit: int) -> list[str]:
        """Ids of up to ``limit`` runs of ``org_id`` started by the trigger event ``event_id``, oldest first."""
        cursor = self.runs.find(by_index({"org_id": org_id, "trigger_event_id": event_id}), {"_id": 1, "created_ms": 1})
        docs = await cursor.to_list()
        docs.sort(key=lambda d: (int(d["created_ms"]), d["_id"]))
        return [d["_id"] for d in docs[:limit]]

    # journal -----------------------------------------------------------------------------------------------

    async def journal_attempt(
        self,
        run: Run,
        key: str,
        type_: str,
        status: str,
        *,
        output: Any = None,
        next_key: str = "",
        error: str = "",
        effect_id: str = "",
        started_ms: int = 0,
        gen: int | None = None,
        attempt: int | None = None,
    ) -> Attempt:
        """Record one attempt and return it (idempotent: the same generation written again after a crash is
        ignored)."""
        doc = self.attempt_doc(
            run,
            key,
            type_,
            status,
            output=output,
            next_key=next_key,
            error=error,
            effect_id=effect_id,
            started_ms=started_ms,
            gen=gen,
            attempt=attempt,
        )
        with contextlib.suppress(DuplicateKeyError):
            await self.journal.insert_one(doc)
        return Attempt.from_doc(doc)

    async def insert_attempts(self, docs: list[Doc]) -> None:
        """Record several attempts built by :meth:`attempt_doc` in one write; generations journaled already
        (written again after a crash) are left as they are."""
        if not docs:
            return
        try:
            await self.journal.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise

    @staticmethod
    def attempt_doc(
        run: Run,
        key: str,
        type_: str,
        status: str,
        *,
        output: Any = None,
        next_key: str = "",
        error: str = "",
        effect_id: str = "",
        started_ms: int = 0,
        gen: int | None = None,
        attempt: int | None = None,
    ) -> Doc:
        """The journal document of one attempt (``gen``/``attempt`` default to the run's)."""
        g = run.gen if gen is None else gen
        now = now_ms()
        doc: Doc = {
            "_id": f"{run.id}:{g:06d}",
            "run_id": run.id,
            "org_id": run.org_id,
            "key": key,
            "type": type_,
            "attempt": run.attempt if attempt is None else attempt,
            "gen": g,
            "status": status,
            "output": output,
            "next": next_key,
            "error": error,
            "effect_id": effect_id,
            "started_ms": started_ms or now,
            "finished_ms": now,
        }
        return doc

    async def journal_of(self, run_id: str) -> list[Attempt]:
        """Every attempt of a run, in generation order."""
        docs = await self.journal.find(by_index({"run_id": run_id})).to_list()
        return sorted((Attempt.from_doc(d) for d in docs), key=lambda a: a.gen)

    async def attempt_of(self, run_id: str, gen: int) -> Attempt | None:
        doc = await self.journal.find_one({"_id": f"{run_id}:{gen:06d}"})
        return Attempt.from_doc(doc) if doc else None

    # received events ---------------------------------------------------------------------------------------

    async def keep_received(self, run_id: str, org_id: str, event: Doc, limit: int) -> None:
        """Keep ``event`` for the waits of ``run_id`` (idempotent per event id; at most ``limit`` per run)."""
        if await count(self.received, by_index({"run_id": run_id})) >= limit:
            return
        with contextlib.suppress(DuplicateKeyError):
            await self.received.insert_one(
                {
                    "_id": f"{run_id}:{event['id']}",
                    "run_id": run_id,
                    "org_id": org_id,
                    "type": event["type"],
                    "event": event,
                    "received_ms": now_ms(),
                }
            )

    async def count_received(self, run_id: str, type_: str) -> int:
        """How many events of ``type_`` are kept for ``run_id``."""
        return await count(self.received, by_index({"run_id": run_id, "type": type_}))

    async def wake_run(self, run_id: str) -> bool:
        """Make a waiting run due now (an event it waits for came while it went to sleep)."""
        result = await self.runs.update_one(
            by_index({"_id": run_id, "status": "waiting"}), {"$set": {"due_ms": now_ms()}}
        )
        return result.modified_count == 1

    async def keep_reply(self, org_id: str, request_id: str, event: Doc) -> bool:
        """Keep the report service's answer ``event`` to request ``request_id`` (idempotent; the first answer
        stays) and make the run waiting on it due now; True when a run was woken."""
        with contextlib.suppress(DuplicateKeyError):
            await self.replies.insert_one(
                {"_id": request_id, "org_id": org_id, "event": event, "received_ms": now_ms()}
            )
        result = await self.runs.update_one(
            by_index({"org_id": org_id, "report_request": request_id, "status": "waiting"}),
            {"$set": {"due_ms": now_ms()}},
        )
        return result.modified_count == 1

    async def reply_for(self, org_id: str, request_id: str) -> Doc | None:
        """The answer kept for report request ``request_id`` of ``org_id`` (the event as JSON), or ``None``."""
        doc = await self.replies.find_one(by_index({"_id": request_id, "org_id": org_id}))
        return doc["event"] if doc else None

    async def received_for(self, run_id: str, type_: str) -> list[Doc]:
        """Events of ``type_`` kept for ``run_id``, oldest first (each the event as JSON)."""
        docs = await self.received.find(by_index({"run_id": run_id, "type": type_})).to_list()
        docs.sort(key=lambda d: (int(d["received_ms"]), d["_id"]))
        return [d["event"] for d in docs]
