"""Requests made in one turn of the event loop, answered together by one call (a pipeline or a script).

A hot path that asks Redis for something per item (a version ``GET`` per attempt, a slot take per attempt)
pays one round trip, one command packing and one client span per item. With many items in flight at once,
most of them ask in the same turn of the event loop: :class:`TurnBatcher` collects what was asked in that
turn and hands it to one ``send`` call, scheduled with ``loop.call_soon`` after the last of them asked, so
every caller still has its answer from a request made after it asked (read-your-writes holds) and a burst of
``n`` requests costs one round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TurnBatcher(Generic[K, V]):
    """Collects :meth:`ask` calls of one event-loop turn and answers them with one ``send`` call.

    :param send: answers a batch: gets the asked items in order (distinct when ``shared``) and returns one
        answer per item, in the same order. It handles its own expected failures (a Redis error: answer
        with a fallback); anything it raises is raised to every caller of that batch.
    :param shared: callers asking for an equal item in the same turn share one request and its answer (a
        read); when False every call is its own request (a take, a release).
    :param abandoned: called with ``(item, answer)`` when the caller that asked was cancelled before the
        answer came, so the caller's side effect can be undone (a slot taken for nobody is given back);
        only for unshared batchers.
    :param max_batch: most items in one ``send`` call; a larger turn goes out as several calls, at once.
    :param delay: seconds to wait after the first request before sending (0: at the end of this loop turn).
        A window gathers requests that come a few turns apart (releases, as answers arrive one by one) at
        the price of that much latency; use it only where a late answer costs nothing.
    """

    def __init__(
        self,
        send: Callable[[list[K]], Awaitable[Sequence[V]]],
        *,
        shared: bool = False,
        abandoned: Callable[[K, V], None] | None = None,
        max_batch: int = 1000,
        delay: float = 0.0,
    ) -> None:
        if shared and abandoned is not None:
            raise ValueError("abandoned answers are only known for unshared requests")
        self._send_batch = send
        self._shared = shared
        self._abandoned = abandoned
        self._max = max_batch
        self._delay = delay
        self._items: list[K] = []
        self._futures: list[asyncio.Future[V]] = []
        self._by_item: dict[K, asyncio.Future[V]] = {}
        self._scheduled = False
        self._tasks: set[asyncio.Future[None]] = set()
        self.batches = 0
        """How many ``send`` calls were made (for tests and metrics)."""

    async def ask(self, item: K) -> V:
        """The answer to ``item``, from the batch of this loop turn. Raises what ``send`` raised.

        Cancelling the caller does not cancel the batch: the other callers still get their answers, and
        ``abandoned`` gets this caller's."""
        fut = self._by_item.get(item) if self._shared else None
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self._items.append(item)
            self._futures.append(fut)
            if self._shared:
                self._by_item[item] = fut
            if not self._scheduled:
                self._scheduled = True
                if self._delay > 0:
                    loop.call_later(self._delay, self._flush)
                else:
                    loop.call_soon(self._flush)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            if self._abandoned is not None:  # runs at once (next turn) when the answer is already there
                fut.add_done_callback(lambda f, item=item: self._abandon(item, f))  # type: ignore[misc]
            raise

    def _abandon(self, item: K, fut: asyncio.Future[V]) -> None:
        if not fut.cancelled() and fut.exception() is None and self._abandoned is not None:
            self._abandoned(item, fut.result())

    def _flush(self) -> None:
        items, futures = self._items, self._futures
        self._items, self._futures, self._by_item, self._scheduled = [], [], {}, False
        for i in range(0, len(items), self._max):
            task = asyncio.ensure_future(self._answer(items[i : i + self._max], futures[i : i + self._max]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, items: list[K], futures: list[asyncio.Future[V]]) -> None:
        self.batches += 1
        try:
            answers = await self._send_batch(items)
            if len(answers) != len(items):
                raise RuntimeError(f"a batch of {len(items)} got {len(answers)} answers")
        except BaseException as exc:  # never leave a caller waiting on a batch nobody will answer
            for fut in futures:
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: cancelled callers must not warn
            if not isinstance(exc, Exception):
                raise
            return
        for fut, answer in zip(futures, answers, strict=True):
            if not fut.done():
                fut.set_result(answer)

    async def wait_sent(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for the batches already sent to be answered (shutting down)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
