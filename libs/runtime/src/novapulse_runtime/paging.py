"""Cursor paging, one rule for every list route: fetch ``limit + 1`` items after the cursor's key; when the
extra item exists, the page is full and ``next_cursor`` names its last item; otherwise ``next_cursor`` is
``null`` — so a last page that is exactly full never hands out a cursor to an empty page.

The cursor is opaque to clients: the sort key of the page's last item in URL-safe base64 (RFC 4648 §5,
without padding). Clients send it back unchanged. :data:`CURSOR_PATTERN` admits exactly the strings that
decode (whole 4-character groups, then an optional group of 2 or 3), so what the OpenAPI schema calls valid
is accepted and anything else is a 422 like any invalid query parameter. A cursor is only ever a bound in a
query already scoped by organisation, so one a client made up pages from wherever it points, harmlessly.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_CURSOR_LENGTH = 256
"""Characters; a sort key of up to 192 bytes fits."""
CURSOR_PATTERN = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?$"
"""URL-safe base64 without padding: every string it matches decodes (a length of 1 modulo 4 cannot)."""


def encode_cursor(key: str) -> str:
    """The opaque cursor of sort key ``key``."""
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The sort key inside ``cursor`` (bytes that are not UTF-8 become U+FFFD: a made-up cursor is a bound
    like any other).

    :raises ValueError: ``cursor`` does not match :data:`CURSOR_PATTERN`.
    """
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise ValueError("a cursor is URL-safe base64 without padding, as next_cursor gives it")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError) as exc:  # unreachable after the pattern; kept as the contract
        raise ValueError("a cursor is URL-safe base64 without padding, as next_cursor gives it") from exc
    return raw.decode("utf-8", errors="replace")


class PageQuery(BaseModel):
    """Query parameters of a list route: ``limit`` (items per page, 1 to 200, default 50) and ``cursor`` (the
    ``next_cursor`` of the previous page; empty for the first page). Routes with filters subclass it."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Items per page")
    cursor: str = Field(
        default="",
        max_length=MAX_CURSOR_LENGTH,
        pattern=CURSOR_PATTERN,
        description="`next_cursor` of the previous page; empty for the first page",
    )

    @property
    def after(self) -> str | None:
        """The sort key to start after, or ``None`` for the first page."""
        return decode_cursor(self.cursor) if self.cursor else None

    @property
    def fetch(self) -> int:
        """How many items the repository reads: ``limit + 1`` (the extra one only says a next page exists)."""
        return self.limit + 1


def page(items: Sequence[T], limit: int, key: Callable[[T], str]) -> tuple[list[T], str | None]:
    """Cut ``items`` (read with ``limit + 1``, in sort order) to one page.

    :returns: the first ``limit`` items and the cursor of the next page (``None`` when there is none).
    """
    shown = list(items[:limit])
    if len(items) > limit and shown:
        return shown, encode_cursor(key(shown[-1]))
    return shown, None
