"""The pages' small helpers: form times (``datetime-local`` read as UTC), shown times, path ids."""

from __future__ import annotations

import pytest

from novapulse_console.views.bus import age
from novapulse_console.views.pagekit import ID, form_time, local_input, shown_time
from novapulse_console.views.reports import size


def test_form_time_reads_datetime_local_as_utc_and_keeps_offsets() -> None:
    assert form_time("2026-11-30T12:05", "since") == "2026-11-30T12:05:00+00:00"
    assert form_time("2026-11-30T12:05:00+01:00", "since") == "2026-11-30T12:05:00+01:00"
    assert form_time("2026-11-30T12:05:00Z", "since") == "2026-11-30T12:05:00+00:00"
    assert form_time("  ", "since") is None
    with pytest.raises(ValueError, match="since: not a date and time"):
        form_time("yesterday", "since")


def test_times_shown_and_given_back_in_utc() -> None:
    assert shown_time("2026-11-30T13:05:09+01:00") == "2026-11-30 12:05:09 UTC"
    assert shown_time(None) == ""
    assert shown_time("garbage") == "garbage"
    assert local_input("2026-11-30T13:05:00+01:00") == "2026-11-30T12:05"
    assert local_input("nope") == ""


def test_path_ids_cannot_become_other_paths() -> None:
    assert ID.fullmatch("ep_01a22c64be4ec73440913b7d6877")
    for bad in ("..", "a/b", "", "x" * 65, "ep_1?x=1", "%2e%2e"):
        assert not ID.fullmatch(bad), bad


def test_ages_and_sizes_read_well() -> None:
    assert [age(None), age(5), age(600), age(10_800), age(400_000)] == ["—", "5 s", "10 min", "3 h", "5 d"]
    assert [size(None), size(100), size(2048), size(5 * 1024 * 1024)] == ["—", "100 B", "2.0 KiB", "5.0 MiB"]
