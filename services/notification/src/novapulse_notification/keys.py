"""Identities of what the service stores: the same (event, recipient, channel) always names the same delivery
and the same (event, user) the same in-app notice — the unique keys that make delivery exactly-once in effect —
and the sort key newest-first lists page by."""

from __future__ import annotations

import hashlib
from datetime import datetime

from novapulse_runtime.clock import to_ms


def delivery_key(event_id: str, recipient: str, channel: str) -> str:
    """The ``_id`` of one delivery: 40 hex digits of SHA-256 over (event id, recipient lower-cased, channel)."""
    return hashlib.sha256(f"{event_id}\x00{recipient.lower()}\x00{channel}".encode()).hexdigest()[:40]


def notice_key(event_id: str, user_id: str) -> str:
    """The ``_id`` of one in-app notice: 32 hex digits of SHA-256 over (event id, user id)."""
    return hashlib.sha256(f"{event_id}\x00{user_id}".encode()).hexdigest()[:32]


def sort_key(at: datetime, unique: str) -> str:
    """A string that orders by time (14-digit epoch milliseconds), then by a unique suffix: lists sort by it
    descending and page after it (:mod:`novapulse_runtime.paging`)."""
    return f"{to_ms(at):014d}-{unique}"
