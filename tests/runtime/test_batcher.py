"""The per-turn batcher: what is asked in one turn of the event loop goes out as one ``send`` call, each
caller gets its own answer, a failed batch fails every caller of it (and only them), and a cancelled caller's
answer is handed to ``abandoned``."""

from __future__ import annotations

import asyncio

import pytest

from novapulse_devkit.testing import wait_until
from novapulse_runtime.batcher import TurnBatcher

pytestmark = pytest.mark.unit


class Recorder:
    """A ``send`` that answers ``item * 10`` (or raises for an item < 0) and records every batch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def send(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if any(i < 0 for i in items):
            raise ValueError("bad item")
        return [i * 10 for i in items]


async def test_one_turn_is_one_call_and_each_caller_gets_its_own_answer() -> None:
    rec = Recorder()
    batcher: TurnBatcher[int, int] = TurnBatcher(rec.send)
    assert await asyncio.gather(*(batcher.ask(i) for i in [3, 1, 2, 1])) == [30, 10, 20, 10]
    assert rec.batches == [[3, 1, 2, 1]]  # unshared: every call its own request
    assert await batcher.ask(7) == 70  # a later turn: its own call
    assert rec.batches == [[3, 1, 2, 1], [7]]
    assert batcher.batches == 2


async def test_shared_requests_of_one_turn_are_asked_once() -> None:
    rec = Recorder()
    batcher: TurnBatcher[int, int] = TurnBatcher(rec.send, shared=True)
    assert await asyncio.gather(*(batcher.ask(i) for i in [1, 2, 1, 1])) == [10, 20, 10, 10]
    assert rec.batches == [[1, 2]]
    with pytest.raises(ValueError, match="unshared"):
        TurnBatcher(rec.send, shared=True, abandoned=lambda item, answer: None)


async def test_a_failed_batch_fails_its_callers_only() -> None:
    rec = Recorder()
    batcher: TurnBatcher[int, int] = TurnBatcher(rec.send)
    got = await asyncio.gather(batcher.ask(1), batcher.ask(-1), return_exceptions=True)
    assert [type(g) for g in got] == [ValueError, ValueError]
    assert list(await asyncio.gather(batcher.ask(2), batcher.ask(3))) == [20, 30]


async def test_a_send_answering_the_wrong_number_of_items_is_an_error() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher: TurnBatcher[int, int] = TurnBatcher(short)
    got = await asyncio.gather(batcher.ask(1), batcher.ask(2), return_exceptions=True)
    assert all(isinstance(g, RuntimeError) for g in got)


async def test_a_cancelled_caller_does_not_cancel_the_batch_and_its_answer_is_abandoned() -> None:
    rec = Recorder()
    rec.release.clear()  # the batch is under way until released
    abandoned: list[tuple[int, int]] = []
    batcher: TurnBatcher[int, int] = TurnBatcher(
        rec.send, abandoned=lambda item, answer: abandoned.append((item, answer))
    )
    first = asyncio.create_task(batcher.ask(1))
    second = asyncio.create_task(batcher.ask(2))
    while not rec.batches:
        await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    rec.release.set()
    assert await second == 20
    await batcher.wait_sent(1.0)
    await wait_until(lambda: bool(abandoned), 5.0, message="the cancelled caller's answer abandoned")
    assert abandoned == [(1, 10)]
    assert rec.batches == [[1, 2]]


async def test_a_large_turn_goes_out_in_parts_of_max_batch() -> None:
    rec = Recorder()
    batcher: TurnBatcher[int, int] = TurnBatcher(rec.send, max_batch=3)
    assert await asyncio.gather(*(batcher.ask(i) for i in range(7))) == [i * 10 for i in range(7)]
    assert rec.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_window_gathers_requests_of_several_turns() -> None:
    rec = Recorder()
    batcher: TurnBatcher[int, int] = TurnBatcher(rec.send, delay=0.05)
    first = asyncio.create_task(batcher.ask(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # a later turn, still inside the window
    assert list(await asyncio.gather(first, batcher.ask(2))) == [10, 20]
    assert rec.batches == [[1, 2]]
