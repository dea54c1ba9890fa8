"""Eager start of coroutines (the consumer's per-event fast path): what the coroutine sees is what a task
would show it."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from novapulse_runtime.eager import start_eagerly, start_task_eagerly

pytestmark = pytest.mark.unit

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


async def test_a_coroutine_that_never_waits_finishes_at_once_without_a_task() -> None:
    caller = asyncio.current_task()
    before = asyncio.all_tasks()
    seen: list[asyncio.Task[object] | None] = []

    async def quick() -> None:
        seen.append(asyncio.current_task())
        var.set("quick")

    assert start_eagerly(quick()) is None
    assert seen
    assert seen[0] is not None
    assert seen[0] is not caller
    assert asyncio.current_task() is caller
    assert var.get() == "unset"  # its context is a copy: nothing leaks into the caller's
    assert asyncio.all_tasks() == before


async def test_a_coroutine_that_waits_goes_on_in_the_task_it_saw_with_its_context() -> None:
    caller = asyncio.current_task()
    seen: list[asyncio.Task[object] | None] = []

    async def slow() -> int:
        seen.append(asyncio.current_task())
        var.set("slow")
        await asyncio.sleep(0.01)
        seen.append(asyncio.current_task())
        assert var.get() == "slow"
        return 5

    task = start_eagerly(slow())
    assert task is not None
    assert seen == [task]
    assert asyncio.current_task() is caller
    assert var.get() == "unset"
    assert task in asyncio.all_tasks()
    assert await task == 5
    assert seen == [task, task]


async def test_asyncio_timeout_entered_before_the_first_wait_cancels_the_right_task() -> None:
    caller = asyncio.current_task()
    assert caller is not None

    async def bounded() -> None:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(30)

    task = start_eagerly(bounded())
    assert task is not None
    with pytest.raises(TimeoutError):
        await task
    assert caller.cancelling() == 0  # the caller was never the target


async def test_cancellation_reaches_the_coroutine_and_cancels_its_task() -> None:
    cleaned: list[bool] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cleaned.append(True)
            raise

    task = start_eagerly(waits())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert cleaned == [True]


async def test_a_self_cancellation_before_the_first_wait_is_kept() -> None:
    async def cancels_itself() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(30)

    task = start_eagerly(cancels_itself())
    assert task is not None
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_errors_before_and_after_the_first_wait() -> None:
    caller = asyncio.current_task()

    async def fails_at_once() -> None:
        raise ValueError("at once")

    with pytest.raises(ValueError, match="at once"):
        start_eagerly(fails_at_once())
    assert asyncio.current_task() is caller  # restored after the error

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise ValueError("later")

    task = start_eagerly(fails_later())
    assert task is not None
    with pytest.raises(ValueError, match="later"):
        await task


async def test_task_groups_and_bare_futures_work_inside() -> None:
    loop = asyncio.get_running_loop()

    async def group() -> int:
        async with asyncio.TaskGroup() as tasks:
            child = tasks.create_task(asyncio.sleep(0.01, result=3))
        return child.result()

    async def future() -> int:
        fut: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.01, fut.set_result, 7)
        return await fut

    first, second = start_eagerly(group()), start_eagerly(future())
    assert first is not None
    assert second is not None
    assert await first == 3
    assert await second == 7


async def test_outside_any_task() -> None:
    done: list[asyncio.Task[object] | None] = []
    ran = asyncio.Event()

    async def quick() -> None:
        ran.set()

    asyncio.get_running_loop().call_soon(lambda: done.append(start_eagerly(quick())))
    await asyncio.wait_for(ran.wait(), timeout=5)
    assert done == [None]


async def test_start_task_eagerly_runs_at_once_and_always_gives_a_future_of_the_outcome() -> None:
    steps: list[str] = []

    async def at_once() -> int:
        steps.append("at once")
        return 42

    async def fails_at_once() -> int:
        steps.append("fails")
        raise ValueError("at once")

    async def waits() -> int:
        steps.append("before the wait")
        await asyncio.sleep(0)
        steps.append("after the wait")
        return 7

    first = start_task_eagerly(at_once())
    assert steps == ["at once"]  # ran before start_task_eagerly returned, not at the next loop turn
    assert first.done()
    assert await first == 42

    second = start_task_eagerly(fails_at_once())
    assert steps[-1] == "fails"
    assert second.done()
    with pytest.raises(ValueError, match="at once"):
        await second

    third = start_task_eagerly(waits())
    assert steps[-1] == "before the wait"  # its first step ran before the call returned
    assert isinstance(third, asyncio.Task)
    assert not third.done()
    assert await third == 7
    assert steps[-1] == "after the wait"

    fourth = start_task_eagerly(waits())
    fourth.cancel()  # cancelling the future cancels the coroutine, as with a task from ensure_future
    with pytest.raises(asyncio.CancelledError):
        await fourth
    assert steps[-1] == "before the wait"
