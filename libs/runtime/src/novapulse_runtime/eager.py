"""Eager start of a coroutine: run it at once, up to its first suspension, and give it a task only if it
suspends (what Python 3.12's ``asyncio.eager_task_factory`` does, for the 3.11 runtime of the images).

A consumer starts thousands of short handlers a second; most bus handlers of a busy service either finish
without waiting (an event they ignore, a cache update) or wait on I/O. Creating a task, scheduling its first
step and its done callback through the event loop cost a quarter of the consumer's CPU per event when the
handler finished at once; with :func:`start_eagerly` such a handler costs a function call.

The coroutine sees what it would see in a task: ``asyncio.current_task()`` is the very task that goes on
running it if it suspends (so ``asyncio.timeout``, ``TaskGroup`` and a self-cancellation keep working), and
it runs in its own copy of the caller's context variables, the one its task keeps."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

if sys.version_info < (3, 12):
    from asyncio.tasks import _current_tasks, _enter_task, _leave_task  # type: ignore[attr-defined]


T = TypeVar("T")


class Resume:
    """Goes on driving ``coro``, which was started by hand (``coro.send(None)``, outside any task or inside
    the awaiting one) and suspended by yielding ``yielded`` (a future, or ``None`` for a bare yield): the task
    awaiting this object waits on ``yielded`` first, then every value or exception the task receives
    (a cancellation included) is passed on to ``coro``, as ``await coro`` would have; the awaiting gives
    ``coro``'s result. Awaitable once."""

    __slots__ = ("coro", "yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro: Coroutine[Any, Any, Any] | None = coro
        self.yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self.coro, self.yielded
        assert coro is not None, "awaited twice"
        self.coro = self.yielded = None  # the task's frame keeps them alive, not this object
        while True:
            try:
                value = yield yielded
            except BaseException as exc:  # cancellation, GeneratorExit: the coroutine's to handle
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(value)
                except StopIteration as stop:
                    return stop.value


async def _resumed(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    return await Resume(coro, yielded)


def start_eagerly(
    coro: Coroutine[Any, Any, Any], *, loop: asyncio.AbstractEventLoop | None = None, name: str | None = None
) -> asyncio.Task[Any] | None:
    """Run ``coro`` now until it finishes or first suspends.

    Returns ``None`` when it finished (its result is dropped: meant for coroutines returning ``None``), else
    the task that goes on running it (registered like any task: ``asyncio.all_tasks``, cancellation, done
    callbacks). An exception ``coro`` raises before suspending is raised here, after the caller's current
    task was restored. Must be called from code running in ``loop`` (default: the running loop), inside a
    task or not; ``coro`` runs in a copy of the caller's context."""
    if loop is None:
        loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    if sys.version_info >= (3, 12):
        task = asyncio.Task(coro, loop=loop, name=name, context=context, eager_start=True)
        if task.done():
            task.result()  # raises what the coroutine raised
            return None
        return task
    # Python 3.11: the task object exists (uninitialised) before the coroutine runs, so that
    # ``current_task()`` inside it is the task that will go on running it; initialised only if needed.
    task = asyncio.Task.__new__(asyncio.Task)
    caller = _current_tasks.get(loop)  # asyncio.current_task(loop) without its Python frame
    if caller is not None:
        _leave_task(loop, caller)
    _enter_task(loop, task)
    try:
        yielded = context.run(coro.send, None)
    except StopIteration:
        return None
    finally:
        _leave_task(loop, task)
        if caller is not None:
            _enter_task(loop, caller)
    cancels = task.cancelling()  # the coroutine cancelled its own task before suspending
    task.__init__(_resumed(coro, yielded), loop=loop, name=name, context=context)  # type: ignore[misc]
    for _ in range(cancels):
        task.cancel()
    return task


def start_task_eagerly(
    coro: Coroutine[Any, Any, T], *, loop: asyncio.AbstractEventLoop | None = None, name: str | None = None
) -> asyncio.Future[T]:
    """Like :func:`start_eagerly` (``coro`` runs now, up to its first suspension, so what it writes before
    its first wait is written at once), but always returns a future of its outcome: the task that goes on
    running it (awaiting it, cancelling it: as with ``asyncio.ensure_future``), or, when ``coro`` finished
    without suspending, a done future holding its result or the ``Exception`` it raised."""
    if loop is None:
        loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, name=name, context=contextvars.copy_context(), eager_start=True)
    kept: list[T] = []

    async def keep() -> T:  # start_eagerly drops the result of a coroutine that never waits: kept here
        result = await coro
        kept.append(result)
        return result

    done: asyncio.Future[T] = loop.create_future()
    try:
        task = start_eagerly(keep(), loop=loop, name=name)
    except Exception as exc:
        done.set_exception(exc)
        return done
    if task is not None:
        return task
    done.set_result(kept[0])
    return done
