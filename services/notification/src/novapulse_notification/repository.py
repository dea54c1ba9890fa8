"""MongoDB storage of the notification service. Every query is scoped by ``org_id``.

Collections: ``users`` (projection of auth's users), ``deliveries`` (one document per (event, recipient,
channel), unique), ``delivery_attempts`` (one insert-only document per attempt), ``notifications`` (in-app
notices) and ``preferences``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from novapulse_runtime.clock import now_ms, utcnow
from novapulse_runtime.documents import Doc, by_index, count

from .constants import ATTEMPTS, DELIVERIES, MAX_ATTEMPTS_LOGGED, NOTIFICATIONS, PREFERENCES, USERS, DeliveryState
from .keys import sort_key
from .mailer import Attempt

DUPLICATE_KEY = 11000
"""MongoDB's error code of a unique index violation."""
UNSETTLED = [DeliveryState.PENDING.value, DeliveryState.SENDING.value, DeliveryState.RETRYING.value]


def delivery_doc(
    *,
    key: str,
    org_id: str,
    event_id: str,
    event_type: str,
    template: str,
    category: str,
    critical: bool,
    channel: str,
    recipient: str,
    user_id: str | None,
    email: str,
    owner: str,
    lease: float,
    payload: Mapping[str, Any] | None,
) -> Doc:
    """A new delivery's document: ``pending``, leased to ``owner`` for ``lease`` seconds, sent later from
    ``payload`` when given (``None``: its outcome is decided without sending)."""
    created = utcnow()
    doc: Doc = {
        "_id": key,
        "org_id": org_id,
        "event_id": event_id,
        "event_type": event_type,
        "template": template,
        "category": category,
        "critical": critical,
        "channel": channel,
        "recipient": recipient,
        "user_id": user_id,
        "email": email,
        "state": DeliveryState.PENDING.value,
        "attempt_count": 0,
        "created_at": created,
        "sort_key": sort_key(created, key),
        "lease_owner": owner,
        "lease_until_ms": now_ms() + int(lease * 1000),
    }
    if payload is not None:
        doc["payload"] = dict(payload)
    return doc


class Repository:
    """All database access of the service."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db
        self.users = db[USERS]
        self.deliveries = db[DELIVERIES]
        self.attempts = db[ATTEMPTS]
        self.notifications = db[NOTIFICATIONS]
        self.preferences = db[PREFERENCES]

    async def ensure_indexes(self) -> None:
        await self.users.create_index([("org_id", ASCENDING), ("user_id", ASCENDING)], unique=True)
        await self.users.create_index([("org_id", ASCENDING), ("role", ASCENDING)])
        await self.deliveries.create_index(
            [("event_id", ASCENDING), ("recipient", ASCENDING), ("channel", ASCENDING)], unique=True
        )
        await self.deliveries.create_index([("org_id", ASCENDING), ("sort_key", DESCENDING)])
        await self.deliveries.create_index([("state", ASCENDING), ("lease_until_ms", ASCENDING)])
        await self.attempts.create_index([("org_id", ASCENDING), ("delivery_id", ASCENDING), ("n", ASCENDING)])
        await self.notifications.create_index([("org_id", ASCENDING), ("user_id", ASCENDING), ("sort_key", DESCENDING)])
        await self.preferences.create_index([("org_id", ASCENDING), ("user_id", ASCENDING)], unique=True)

    # ---- projection of users -------------------------------------------------------------------------

    async def apply_user_change(self, org_id: str, user_id: str, fields: Mapping[str, Any], version: int) -> None:
        """Set ``fields`` of the user, each only if no newer event (by event time ``version``, epoch ms) has
        set it already: events handled out of order (concurrent handlers, retries) do not undo newer ones."""
        key = f"{org_id}:{user_id}"
        doc = await self.users.find_one({"_id": key, "org_id": org_id}) or {}
        fresh = {k: v for k, v in fields.items() if int(doc.get(f"v_{k}", 0)) <= version}
        if not fresh:
            return
        versions = {f"v_{k}": version for k in fresh}
        await self.users.update_one(
            {"_id": key, "org_id": org_id},
            {"$set": {**fresh, **versions, "org_id": org_id, "user_id": user_id, "updated_ms": now_ms()}},
            upsert=True,
        )

    async def get_user(self, org_id: str, user_id: str) -> Doc | None:
        return await self.users.find_one(by_index({"org_id": org_id, "user_id": user_id}))

    async def users_with_roles(self, org_id: str, roles: Sequence[str]) -> list[Doc]:
        cursor = self.users.find(by_index({"org_id": org_id, "role": {"$in": list(roles)}, "status": "active"}))
        return [d async for d in cursor.sort("user_id", ASCENDING)]

    async def organization_name(self, org_id: str) -> str:
        doc = await self.users.find_one(by_index({"org_id": org_id, "organization": {"$exists": True}}))
        return str(doc["organization"]) if doc else ""

    # ---- deliveries ----------------------------------------------------------------------------------

    async def open_deliveries(self, docs: Sequence[Doc]) -> list[tuple[Doc, bool]]:
        """Record deliveries (documents from :func:`delivery_doc`) in one unordered ``insert_many``; those
        recorded before (same ``_id``, or the same (event, recipient, channel)) are left as they are. Returns,
        in the order of ``docs``, each stored document and whether this call created it (``False``: the
        document found is returned). Raises ``BulkWriteError`` for any failure other than a duplicate key."""
        if not docs:
            return []
        try:
            await self.deliveries.insert_many(list(docs), ordered=False)
            return [(doc, True) for doc in docs]
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            duplicates = {int(e["index"]) for e in errors}
        out: list[tuple[Doc, bool]] = []
        for i, doc in enumerate(docs):
            if i not in duplicates:
                out.append((doc, True))
                continue
            found = await self.deliveries.find_one({"_id": doc["_id"], "org_id": doc["org_id"]})
            if found is None:  # the unique (event, recipient, channel) index matched a different _id
                found = await self.deliveries.find_one(
                    by_index(
                        {
                            "org_id": doc["org_id"],
                            "event_id": doc["event_id"],
                            "recipient": doc["recipient"],
                            "channel": doc["channel"],
                        }
                    )
                )
            if found is None:
                raise RuntimeError(f"delivery {doc['_id']} was refused as a duplicate and cannot be found")
            out.append((found, False))
        return out

    async def claim(self, org_id: str, key: str, lease: float, owner: str) -> bool:
        """Take the lease of an unsettled delivery (``pending``, ``sending`` or ``retrying``) whose lease is
        free or has run out (its holder died), or that ``owner`` holds already. ``lease`` in seconds."""
        now = now_ms()
        result = await self.deliveries.update_one(
            {
                "_id": key,
                "org_id": org_id,
                "state": {"$in": UNSETTLED},
                "$or": [{"lease_until_ms": {"$lt": now}}, {"lease_owner": owner}],
            },
            {
                "$set": {
                    "state": DeliveryState.SENDING.value,
                    "lease_until_ms": now + int(lease * 1000),
                    "lease_owner": owner,
                },
                "$inc": {"claims": 1},
            },
        )
        return result.modified_count == 1

    async def renew(self, org_id: str, keys: Sequence[str], lease: float, owner: str) -> int:
        """Extend the leases ``owner`` still holds on these deliveries to now + ``lease`` seconds; returns how
        many it still holds (a delivery settled or taken over is left alone)."""
        result = await self.deliveries.update_many(
            {"org_id": org_id, "_id": {"$in": list(keys)}, "lease_owner": owner, "state": {"$in": UNSETTLED}},
            {"$set": {"lease_until_ms": now_ms() + int(lease * 1000)}},
        )
        return int(result.modified_count)

    async def orphans(self, limit: int) -> list[Doc]:
        """Up to ``limit`` deliveries of any organisation whose holder died: ``pending`` or ``sending`` with a
        lease that ran out, and a stored payload to send them from (``retrying`` ones come back with their
        event). One query per state, each an equality and a range on the ``(state, lease_until_ms)`` index: on
        nx-27017 a ``$in`` on ``state`` is not served by the index and every sweep of every worker read the
        whole ``deliveries`` collection, which only grows."""
        now = now_ms()
        found: list[Doc] = []
        for state in (DeliveryState.PENDING, DeliveryState.SENDING):
            if len(found) >= limit:
                break
            query = by_index({"state": state.value, "lease_until_ms": {"$lt": now}, "payload": {"$exists": True}})
            found.extend([d async for d in self.deliveries.find(query).limit(limit - len(found))])
        return found

    async def start_sending(self, org_id: str, key: str, owner: str) -> None:
        """Mark a delivery ``owner`` holds as being handed to the relay (``sending``), its mail counted
        against its recipient budget (``budget_taken``: a take-over does not count it again)."""
        await self.deliveries.update_one(
            {"_id": key, "org_id": org_id, "lease_owner": owner, "state": {"$in": UNSETTLED}},
            {"$set": {"state": DeliveryState.SENDING.value, "budget_taken": True, "updated_ms": now_ms()}},
        )

    async def add_attempt(self, org_id: str, key: str, attempt: Attempt) -> None:
        """Log one attempt (insert-only) and count it on the delivery."""
        result = await self.deliveries.find_one_and_update(
            {"_id": key, "org_id": org_id},
            {"$inc": {"attempt_count": 1}, "$set": {"updated_ms": now_ms()}},
            projection={"attempt_count": 1},
            return_document=ReturnDocument.AFTER,
        )
        n = int(result["attempt_count"]) if result else 0
        if n > MAX_ATTEMPTS_LOGGED:
            return
        await self.attempts.insert_one(
            {
                "org_id": org_id,
                "delivery_id": key,
                "n": n,
                "at": attempt.at,
                "relay": attempt.relay,
                "outcome": attempt.outcome,
                "code": attempt.code,
                "response": attempt.response,
            }
        )

    async def attempts_of(self, org_id: str, keys: Sequence[str]) -> dict[str, list[Doc]]:
        """The logged attempts of these deliveries, oldest first."""
        out: dict[str, list[Doc]] = {k: [] for k in keys}
        found = self.attempts.find(by_index({"org_id": org_id, "delivery_id": {"$in": list(keys)}}))
        async for doc in found.sort([("delivery_id", ASCENDING), ("n", ASCENDING)]):
            out.setdefault(doc["delivery_id"], []).append(doc)
        return out

    async def finish(
        self,
        org_id: str,
        key: str,
        state: DeliveryState,
        reason: str = "",
        *,
        session: AsyncClientSession | None = None,
    ) -> Doc | None:
        """Settle (``sent``/``failed``/``suppressed``) or release (``retrying``) a delivery; a settled delivery
        is never changed again. A settled delivery drops its payload (it may carry a one-time token). Returns
        the delivery as this call left it (without its payload), or ``None`` when it was settled already — so
        exactly one call settles a delivery and may publish its outcome (inside ``session``'s transaction)."""
        update: Doc = {"state": state.value, "updated_ms": now_ms(), "lease_until_ms": 0}
        if reason:
            update["reason"] = reason
        if state is DeliveryState.SENT:
            update["sent_ms"] = update["updated_ms"]
        change: Doc = {"$set": update}
        if state.value not in UNSETTLED:
            change["$unset"] = {"payload": ""}
        return await self.deliveries.find_one_and_update(
            {"_id": key, "org_id": org_id, "state": {"$in": UNSETTLED}},
            change,
            projection={"payload": 0},
            return_document=ReturnDocument.AFTER,
            session=session,
        )

    async def get_delivery(self, org_id: str, key: str) -> Doc | None:
        return await self.deliveries.find_one({"_id": key, "org_id": org_id})

    async def list_deliveries(
        self, org_id: str, filters: Mapping[str, Any], after: str | None, limit: int
    ) -> list[Doc]:
        """Up to ``limit`` deliveries of the organisation matching ``filters`` (field → value), newest first
        (``sort_key`` descending), after the sort key ``after`` (``None``: from the newest)."""
        query: Doc = {"org_id": org_id, **filters}
        if after:
            query["sort_key"] = {"$lt": after}
        found = self.deliveries.find(by_index(query)).sort("sort_key", DESCENDING).limit(limit)
        return [d async for d in found]

    # ---- in-app notifications ------------------------------------------------------------------------

    async def add_notice(
        self,
        *,
        notice_id: str,
        org_id: str,
        user_id: str,
        event_id: str,
        event_type: str,
        category: str,
        title: str,
        body: str,
        link: str | None,
        sort_key: str,
    ) -> bool:
        """Store an unread in-app notice; ``False`` if this event already gave this user one."""
        try:
            await self.notifications.insert_one(
                {
                    "_id": notice_id,
                    "org_id": org_id,
                    "user_id": user_id,
                    "event_id": event_id,
                    "event_type": event_type,
                    "category": category,
                    "title": title,
                    "body": body,
                    "link": link,
                    "created_at": utcnow(),
                    "read": False,
                    "sort_key": sort_key,
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def list_notices(
        self, org_id: str, user_id: str, after: str | None, limit: int, unread_only: bool
    ) -> list[Doc]:
        """Up to ``limit`` notices of the user, newest first, after the sort key ``after`` (``None``: from the
        newest); only unread ones when ``unread_only``."""
        query: Doc = {"org_id": org_id, "user_id": user_id}
        if after:
            query["sort_key"] = {"$lt": after}
        if unread_only:
            query["read"] = False
        found = self.notifications.find(by_index(query)).sort("sort_key", DESCENDING).limit(limit)
        return [d async for d in found]

    async def unread_count(self, org_id: str, user_id: str) -> int:
        return await count(self.notifications, by_index({"org_id": org_id, "user_id": user_id, "read": False}))

    async def mark_read(self, org_id: str, user_id: str, notice_id: str) -> Doc | None:
        query = {"_id": notice_id, "org_id": org_id, "user_id": user_id}
        await self.notifications.update_one({**query, "read": False}, {"$set": {"read": True, "read_ms": now_ms()}})
        return await self.notifications.find_one(query)

    async def mark_all_read(self, org_id: str, user_id: str) -> int:
        result = await self.notifications.update_many(
            by_index({"org_id": org_id, "user_id": user_id, "read": False}),
            {"$set": {"read": True, "read_ms": now_ms()}},
        )
        return int(result.modified_count)

    # ---- preferences ---------------------------------------------------------------------------------

    async def get_preferences(self, org_id: str, user_id: str) -> Doc | None:
        return await self.preferences.find_one(by_index({"org_id": org_id, "user_id": user_id}))

    async def preferences_of(self, org_id: str, user_ids: Sequence[str]) -> dict[str, Doc]:
        """The stored preferences of these users of the organisation, by user id (users without stored
        preferences are absent); one query."""
        if not user_ids:
            return {}
        ids = list(dict.fromkeys(user_ids))
        who: Any = ids[0] if len(ids) == 1 else {"$in": ids}
        found = self.preferences.find(by_index({"org_id": org_id, "user_id": who}))
        return {str(d["user_id"]): d async for d in found}

    async def put_preferences(self, org_id: str, user_id: str, channels: Mapping[str, Mapping[str, bool]]) -> None:
        await self.preferences.update_one(
            {"_id": f"{org_id}:{user_id}", "org_id": org_id},
            {"$set": {"org_id": org_id, "user_id": user_id, "channels": dict(channels), "updated_ms": now_ms()}},
            upsert=True,
        )
