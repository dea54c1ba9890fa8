"""The worker's fast paths against their plain definitions: the cached time formatter against ``zoneinfo``
row by row (across offset changes, odd historic offsets and half-hour zones), the per-report row builder,
staged rows (concatenable, and the one-row lines of earlier versions still read), and the read-ahead of
batches (order, errors, closing)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from novapulse_report.formats import TimeFormatter, format_time, read_staged, row_builder, row_values, staged_chunk
from novapulse_report.generation import _ahead
from novapulse_report.report_types import REPORT_TYPES
from novapulse_report.repository import column_field

pytestmark = pytest.mark.unit

ZONES = ["UTC", "Europe/Paris", "America/St_Johns", "Australia/Lord_Howe", "Asia/Kathmandu", "Africa/Monrovia"]
"""Whole-hour DST, a -03:30/-02:30 zone, a half-hour DST shift, +05:45, and -00:44:30 until 1972."""


def reference(ms: int, zone: ZoneInfo) -> str:
    return (
        (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms))
        .astimezone(zone)
        .isoformat(timespec="milliseconds")
    )


@pytest.mark.parametrize("name", ZONES)
def test_the_cached_formatter_matches_zoneinfo_row_by_row(name: str) -> None:
    zone = ZoneInfo(name)
    fmt = TimeFormatter(zone)
    rnd = random.Random(name)
    ms = -2_200_000_000_000  # 1900: historic local-mean-time offsets with seconds
    while ms < 2_000_000_000_000:
        for _ in range(30):  # rows close together, as a report reads them, then a jump
            ms += rnd.choice((1, 999, 59_999, 60_000, 3_600_000))
            assert fmt(ms) == reference(ms, zone) == format_time(ms, zone), ms
        ms += rnd.randrange(1, 40 * 86_400_000)
    # every minute around 2026's offset changes (and the instants themselves)
    for day in range(365):
        base = 1_767_225_600_000 + day * 86_400_000
        for minute in range(0, 1440, 7):
            at = base + minute * 60_000 + rnd.randrange(60_000)
            assert fmt(at) == reference(at, zone), at


def test_the_row_builder_gives_row_values_cells() -> None:
    rtype = REPORT_TYPES["webhook_outcomes"]
    zone = ZoneInfo("Europe/Paris")
    doc = {"at_ms": 1_774_744_200_123, "v_outcome": "failed", "v_attempts": 5, "v_detail": "=1+1", "key": "x"}
    build = row_builder(rtype, zone, [column_field(c) for c in rtype.column_names])
    values = {"time": doc["at_ms"], "outcome": "failed", "attempts": 5, "detail": "=1+1"}
    assert build(doc) == row_values(rtype, values, zone)
    assert build(doc) == ["2026-03-29T01:30:00.123+01:00", "failed", None, None, None, 5, "=1+1"]


def test_staged_rows_concatenate_and_old_lines_still_read() -> None:
    rows = [["a", 1, None], ["b", 2, "é"], ["c", 3, "x"]]
    staged = staged_chunk(rows[:2]) + staged_chunk([]) + staged_chunk(rows[2:])
    assert [r for batch in read_staged(staged.splitlines()) for r in batch] == rows
    old = b'["a",1,null]\n["b",2,"\\u00e9"]\n'  # one row per line (earlier versions' parts)
    assert [r for batch in read_staged(old.splitlines()) for r in batch] == rows[:2]


async def test_read_ahead_keeps_order_passes_errors_and_closes_its_source() -> None:
    closed = asyncio.Event()

    async def source(fail: bool) -> AsyncGenerator[int, None]:
        try:
            for i in range(5):
                yield i
            if fail:
                raise ValueError("boom")
        finally:
            closed.set()

    assert [i async for i in _ahead(source(False), 2)] == [0, 1, 2, 3, 4]
    got: list[int] = []

    async def drain() -> None:
        async for i in _ahead(source(True), 2):
            got.append(i)

    with pytest.raises(ValueError, match="boom"):
        await drain()
    assert got == [0, 1, 2, 3, 4]  # the items before the error first
    closed.clear()
    early = _ahead(source(False), 1)
    assert await anext(early) == 0
    await early.aclose()  # the reader stops: the task ends and the source is closed
    assert closed.is_set()
