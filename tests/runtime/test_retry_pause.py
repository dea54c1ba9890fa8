"""The pause between retries of a failing background loop: doubling, capped, never overflowing."""

from __future__ import annotations

import pytest

from novapulse_runtime.process import retry_pause

pytestmark = pytest.mark.unit


def test_doubles_from_the_first_pause_up_to_the_cap() -> None:
    assert [retry_pause(n, 0.1, 5.0) for n in range(7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0])
    assert retry_pause(0, 0.05, 5.0) == pytest.approx(0.05)


def test_a_long_outage_neither_overflows_nor_exceeds_the_cap() -> None:
    # before, 0.1 * 2**failures raised OverflowError after ~1,030 failures in a row and ended the retrying loop
    assert retry_pause(10_000, 0.1, 2.0) == 2.0
    assert retry_pause(10_000, 0.1, 3600.0) == pytest.approx(25.6)  # the exponent stops at 8
    assert retry_pause(-1, 0.1, 5.0) == pytest.approx(0.1)
