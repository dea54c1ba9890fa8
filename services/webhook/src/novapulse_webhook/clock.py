"""Time values as stored.

Due times (``next_attempt_at``) are stored as integer epoch milliseconds: they are compared in queries, and
integers compare the same on MongoDB and on the MongoDB-wire test server (which stores datetimes written by
``$set`` as strings). Other timestamps are read back through :func:`as_datetime`, which accepts either form.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def as_datetime(value: Any) -> datetime | None:
    """A stored timestamp (datetime, ISO string or epoch ms) as an aware datetime; None stays None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return from_ms(int(value))
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise TypeError(f"not a timestamp: {value!r}")


def stamp(value: Any) -> datetime:
    """Like :func:`as_datetime` for timestamps that are always present."""
    result = as_datetime(value)
    if result is None:
        raise TypeError("missing timestamp")
    return result
