"""MongoDB storage of endpoints, messages, attempts and accepted events.

Every query made on behalf of a caller is scoped by ``org_id``. The worker addresses messages and endpoints
by id (it acts for every organisation); its claims are atomic ``find_one_and_update`` calls guarded by a
claim token, so two workers never send the same message at once and a dead worker's claims expire.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from .clock import to_ms
from .constants import ATTEMPTS, ENDPOINTS, EVENTS, MESSAGES, MessageStatus

Doc = dict[str, Any]
DUPLICATE_KEY = 11000

# Fields of a message a list does not need (the payload can be 256 KiB).
_LIST_PROJECTION = {"body": 0}


class Repository:
    """The service's database (``novapulse_webhook`` unless ``MONGO_DB`` names another)."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db
        self.endpoints: AsyncCollection[Doc] = db[ENDPOINTS]
        self.messages: AsyncCollection[Doc] = db[MESSAGES]
        self.attempts: AsyncCollection[Doc] = db[ATTEMPTS]
        self.events: AsyncCollection[Doc] = db[EVENTS]

    async def ensure_indexes(self) -> None:
        # (indexes naming _id are avoided: the MongoDB-wire test server cannot build them)
        await self.endpoints.create_index([("org_id", ASCENDING), ("enabled", ASCENDING)])
        await self.messages.create_index([("event_id", ASCENDING), ("endpoint_id", ASCENDING)], unique=True)
        await self.messages.create_index([("status", ASCENDING), ("next_attempt_at", ASCENDING)])
        await self.messages.create_index([("org_id", ASCENDING), ("created_at", DESCENDING)])
        await self.messages.create_index([("org_id", ASCENDING), ("endpoint_id", ASCENDING), ("status", ASCENDING)])
        await self.attempts.create_index([("message_id", ASCENDING), ("attempt", ASCENDING)])

    # --- endpoints -------------------------------------------------------------------------------------

    async def insert_endpoint(self, doc: Doc) -> None:
        await self.endpoints.insert_one(doc)

    async def count_endpoints(self, org_id: str) -> int:
        return await self.endpoints.count_documents({"org_id": org_id})

    async def list_endpoints(self, org_id: str, limit: int, cursor: str | None) -> list[Doc]:
        query: Doc = {"org_id": org_id}
        if cursor:
            query["_id"] = {"$lt": cursor}
        return await self.endpoints.find(query).sort("_id", DESCENDING).limit(limit).to_list()

    async def get_endpoint(self, org_id: str, endpoint_id: str) -> Doc | None:
        return await self.endpoints.find_one({"_id": endpoint_id, "org_id": org_id})

    async def update_endpoint(
        self, org_id: str, endpoint_id: str, changes: Doc, unset: Sequence[str] = ()
    ) -> Doc | None:
        update: Doc = {"$set": changes}
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        return await self.endpoints.find_one_and_update(
            {"_id": endpoint_id, "org_id": org_id}, update, return_document=ReturnDocument.AFTER
        )

    async def delete_endpoint(self, org_id: str, endpoint_id: str) -> bool:
        result = await self.endpoints.delete_one({"_id": endpoint_id, "org_id": org_id})
        return result.deleted_count == 1

    async def org_endpoints(self, org_id: str) -> list[Doc]:
        """Enabled endpoints of an organisation (fan-out)."""
        return await self.endpoints.find({"org_id": org_id, "enabled": True}).to_list()

    async def endpoint(self, endpoint_id: str) -> Doc | None:
        """An endpoint by id, for the worker."""
        return await self.endpoints.find_one({"_id": endpoint_id})

    async def set_failing_since(self, endpoint_id: str, when: datetime) -> None:
        await self.endpoints.update_one({"_id": endpoint_id, "failing_since": None}, {"$set": {"failing_since": when}})

    async def clear_failing_since(self, endpoint_id: str) -> None:
        await self.endpoints.update_one({"_id": endpoint_id}, {"$set": {"failing_since": None}})

    async def disable_endpoint(self, endpoint_id: str, reason: str, now: datetime) -> Doc | None:
        """Disable an enabled endpoint; returns it (before the change) when this call disabled it."""
        return await self.endpoints.find_one_and_update(
            {"_id": endpoint_id, "enabled": True},
            {"$set": {"enabled": False, "disabled_reason": reason, "updated_at": now}},
            return_document=ReturnDocument.BEFORE,
        )

    # --- events ----------------------------------------------------------------------------------------

    async def insert_event(self, doc: Doc) -> bool:
        """False when an event with this id (idempotency key) was already accepted."""
        try:
            await self.events.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def get_event(self, org_id: str, event_id: str) -> Doc | None:
        return await self.events.find_one({"_id": event_id, "org_id": org_id})

    # --- messages --------------------------------------------------------------------------------------

    async def insert_messages(self, docs: Sequence[Doc]) -> set[str]:
        """Insert, skipping (event, endpoint) pairs already stored; returns the ids inserted."""
        if not docs:
            return set()
        ids = {d["_id"] for d in docs}
        try:
            await self.messages.insert_many(list(docs), ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            for e in errors:
                ids.discard(docs[e["index"]]["_id"])
        return ids

    async def list_messages(self, org_id: str, filters: Doc, limit: int, cursor: str | None) -> list[Doc]:
        query: Doc = {"org_id": org_id, **filters}
        if cursor:
            query["_id"] = {"$lt": cursor}
        return await self.messages.find(query, _LIST_PROJECTION).sort("_id", DESCENDING).limit(limit).to_list()

    async def get_message(self, org_id: str, message_id: str) -> Doc | None:
        return await self.messages.find_one({"_id": message_id, "org_id": org_id})

    async def requeue_message(self, org_id: str, message_id: str, now: datetime) -> tuple[Doc | None, bool]:
        """Manual resend: a finished message becomes due now with a fresh retry schedule.
        Returns the message and whether it was requeued (False while it is still being delivered)."""
        msg = await self.messages.find_one({"_id": message_id, "org_id": org_id}, {"attempts": 1, "status": 1})
        if msg is None:
            return None, False
        doc = await self.messages.find_one_and_update(
            {"_id": message_id, "org_id": org_id, "status": {"$in": [MessageStatus.SUCCEEDED, MessageStatus.FAILED]}},
            {
                "$set": {
                    "status": MessageStatus.PENDING,
                    "next_attempt_at": to_ms(now),
                    "round_start": msg.get("attempts", 0),
                    "updated_at": now,
                }
            },
            projection=_LIST_PROJECTION,
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return doc, True
        return await self.messages.find_one({"_id": message_id, "org_id": org_id}, _LIST_PROJECTION), False

    async def failed_message_ids(
        self, org_id: str, endpoint_id: str, since: datetime, until: datetime | None
    ) -> list[Doc]:
        created: Doc = {"$gte": since}
        if until is not None:
            created["$lte"] = until
        return await self.messages.find(
            {"org_id": org_id, "endpoint_id": endpoint_id, "status": MessageStatus.FAILED, "created_at": created},
            {"_id": 1, "attempts": 1},
        ).to_list()

    async def requeue_many(self, org_id: str, found: Sequence[Doc], now: datetime) -> int:
        count = 0
        for msg in found:
            result = await self.messages.update_one(
                {"_id": msg["_id"], "org_id": org_id, "status": MessageStatus.FAILED},
                {
                    "$set": {
                        "status": MessageStatus.PENDING,
                        "next_attempt_at": to_ms(now),
                        "round_start": msg.get("attempts", 0),
                        "updated_at": now,
                    }
                },
            )
            count += result.modified_count
        return count

    async def claim_due(self, now: datetime, lease_until: datetime, token: str, exclude: Sequence[str]) -> Doc | None:
        """Atomically take the most overdue message (pending and due, or a claim whose lease ran out).
        Returns the document as it was before the claim (so a lost in-flight attempt can be logged)."""
        query: Doc = {
            "status": {"$in": [MessageStatus.PENDING, MessageStatus.SENDING]},
            "next_attempt_at": {"$lte": to_ms(now)},
        }
        if exclude:
            query["endpoint_id"] = {"$nin": list(exclude)}
        return await self.messages.find_one_and_update(
            query,
            {"$set": {"status": MessageStatus.SENDING, "next_attempt_at": to_ms(lease_until), "claim": token}},
            sort=[("next_attempt_at", ASCENDING)],
            return_document=ReturnDocument.BEFORE,
        )

    async def renew_claim(self, message_id: str, token: str, lease_until: datetime) -> bool:
        result = await self.messages.update_one(
            {"_id": message_id, "claim": token, "status": MessageStatus.SENDING},
            {"$set": {"next_attempt_at": to_ms(lease_until)}},
        )
        return result.matched_count == 1

    # --- attempts --------------------------------------------------------------------------------------

    async def list_attempts(self, org_id: str, message_id: str) -> list[Doc]:
        return (
            await self.attempts.find({"message_id": message_id, "org_id": org_id}).sort("attempt", ASCENDING).to_list()
        )
