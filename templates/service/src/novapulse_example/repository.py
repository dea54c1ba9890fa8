"""Every document shape and every read and write of the example service's database.

Collections: ``notes`` (``_id`` = note id, ``org_id``, ``author_id``, ``text``, ``created_ms``) and
``members`` (``_id`` = ``<org_id>:<user_id>``, a projection of auth's ``user.registered``). Every query is
scoped by organisation.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from novapulse_runtime.clock import now_ms
from novapulse_runtime.documents import Doc


@dataclass(frozen=True)
class Note:
    """A stored note. ``created_ms``: epoch milliseconds."""

    id: str
    org_id: str
    author_id: str
    text: str
    created_ms: int

    @classmethod
    def from_doc(cls, doc: Doc) -> Note:
        return cls(doc["_id"], doc["org_id"], doc["author_id"], doc["text"], int(doc["created_ms"]))


class Repository:
    """The example service's MongoDB collections."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.notes = db["notes"]
        self.members = db["members"]

    async def ensure_indexes(self) -> None:
        """Create the indexes every query below relies on (idempotent)."""
        # org_id alone: the MongoDB-wire development server cannot index compounds with _id
        await self.notes.create_index([("org_id", ASCENDING)])
        await self.notes.create_index([("created_ms", ASCENDING)])

    async def insert_note(self, org_id: str, author_id: str, text: str) -> Note:
        """Store a new note with a fresh id (``nt_`` + 32 hex) and the current time."""
        doc: Doc = {
            "_id": f"nt_{secrets.token_hex(16)}",
            "org_id": org_id,
            "author_id": author_id,
            "text": text,
            "created_ms": now_ms(),
        }
        await self.notes.insert_one(doc)
        return Note.from_doc(doc)

    async def count_notes(self, org_id: str) -> int:
        return await self.notes.count_documents({"org_id": org_id})

    async def get_note(self, org_id: str, note_id: str) -> Note | None:
        doc = await self.notes.find_one({"_id": note_id, "org_id": org_id})
        return Note.from_doc(doc) if doc else None

    async def list_notes(self, org_id: str, after: str | None, count: int) -> list[Note]:
        """Up to ``count`` notes of ``org_id``, newest id first, after the id ``after``."""
        query: Doc = {"org_id": org_id}
        if after is not None:
            query["_id"] = {"$lt": after}
        cursor = self.notes.find(query).sort("_id", DESCENDING).limit(count)
        return [Note.from_doc(d) async for d in cursor]

    async def delete_note(self, org_id: str, note_id: str) -> bool:
        return (await self.notes.delete_one({"_id": note_id, "org_id": org_id})).deleted_count == 1

    async def purge_notes(self, before_ms: int, batch: int) -> int:
        """Delete up to ``batch`` notes created before ``before_ms`` (epoch ms); returns how many went."""
        ids = [d["_id"] async for d in self.notes.find({"created_ms": {"$lt": before_ms}}, {"_id": 1}).limit(batch)]
        if not ids:
            return 0
        return (await self.notes.delete_many({"_id": {"$in": ids}})).deleted_count

    async def upsert_member(self, org_id: str, user_id: str, email: str) -> None:
        """Remember a member of ``org_id`` (idempotent: replaying the event writes the same document)."""
        await self.members.update_one(
            {"_id": f"{org_id}:{user_id}"},
            {"$set": {"org_id": org_id, "user_id": user_id, "email": email}},
            upsert=True,
        )

    async def count_members(self, org_id: str) -> int:
        return await self.members.count_documents({"org_id": org_id})
