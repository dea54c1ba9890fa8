"""process.supervise: a background loop that raises is logged with its traceback and restarted, never lost
silently; cancellation still stops it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from novapulse_runtime.process import supervise

pytestmark = pytest.mark.unit


async def test_a_failing_loop_is_logged_and_restarted_until_it_returns(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    async def work() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RecursionError(f"run {len(runs)}")

    with caplog.at_level(logging.ERROR, logger="novapulse.process"):
        await asyncio.wait_for(supervise("loop", work, asyncio.Event(), until_return=True), timeout=10)
    assert runs == [0, 1, 2]
    failures = [r for r in caplog.records if r.getMessage() == "background task failed; restarting"]
    assert [(r.task, r.failures, r.exc_info is not None) for r in failures] == [("loop", 1, True), ("loop", 2, True)]  # type: ignore[attr-defined]


async def test_a_loop_that_returns_early_is_restarted_and_stop_ends_it(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    runs: list[int] = []

    async def work() -> None:
        runs.append(1)
        if len(runs) == 2:
            stop.set()

    with caplog.at_level(logging.ERROR, logger="novapulse.process"):
        await asyncio.wait_for(supervise("loop", work, stop), timeout=10)
    assert len(runs) == 2
    assert [r.getMessage() for r in caplog.records] == ["background task returned before shutdown; restarting"]


async def test_cancellation_stops_a_supervised_loop() -> None:
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise("loop", work, asyncio.Event()))
    await asyncio.wait_for(started.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
