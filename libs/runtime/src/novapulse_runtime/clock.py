"""One clock for every service: aware UTC datetimes, and epoch milliseconds where a time is compared in a query.

Due times and lease ends are stored as integer epoch milliseconds: integers compare the same on MongoDB and on
the MongoDB-wire development server (which stores datetimes written by ``$set`` as strings, see
docs/architecture.md). Other timestamps are stored as datetimes and read back through :func:`as_datetime`,
which accepts every stored form.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def now_ms() -> int:
    """The current time in integer milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def to_ms(moment: datetime) -> int:
    """``moment`` in integer milliseconds since the Unix epoch (a naive datetime is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def from_ms(ms: int | float) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def as_datetime(value: Any) -> datetime | None:
    """A stored timestamp (datetime, ISO 8601 string or epoch milliseconds) as an aware UTC datetime;
    ``None`` stays ``None``.

    :raises TypeError: ``value`` is none of those forms.
    :raises ValueError: a string that is not ISO 8601.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        raise TypeError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        return from_ms(value)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise TypeError(f"not a timestamp: {value!r}")


def stamp(value: Any) -> datetime:
    """Like :func:`as_datetime` for timestamps that are always present.

    :raises TypeError: ``value`` is ``None`` or not a timestamp.
    """
    result = as_datetime(value)
    if result is None:
        raise TypeError("missing timestamp")
    return result
