"""Group commit of delivery bookkeeping: message inserts, attempt logs and message updates are gathered for
a few milliseconds and written with one ``bulk_write`` per collection, so the database is not the
bottleneck (one bulk write of hundreds of operations costs about as much as a handful of single writes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pymongo.errors import BulkWriteError, PyMongoError

from .constants import ATTEMPTS, ENDPOINTS, MESSAGES, WRITE_BATCH_DELAY, WRITE_BATCH_SIZE
from .repository import DUPLICATE_KEY, Operation, Repository, Write

log = logging.getLogger("novapulse.webhook.writer")

Op = Operation
# Inserts first (fan-out waits for its message inserts before acknowledging the event), then updates.
_ORDER = ((MESSAGES, "insert"), (ATTEMPTS, "insert"), (MESSAGES, "update"), (ATTEMPTS, "update"), (ENDPOINTS, "update"))
Key = tuple[str, str]
_RETRIES = 5
_CONCURRENT_FLUSHES = 4


class BatchWriter:
    """``put`` queues a :class:`~.repository.Write` and returns a future: True once it is durable, False
    when it was an insert of a duplicate key (already stored), an exception when the database kept failing.

    Up to four batches are written at once, so one slow round trip does not hold every caller up. Batches may
    therefore land out of order: callers only ever put an update after the insert it depends on is durable,
    and updates of one message are guarded by its claim token, so their order does not matter."""

    def __init__(self, repo: Repository, max_batch: int = WRITE_BATCH_SIZE, delay: float = WRITE_BATCH_DELAY) -> None:
        self._repo = repo
        self._max = max_batch
        self._delay = delay
        self._ops: dict[Key, list[tuple[Op, asyncio.Future[bool]]]] = {k: [] for k in _ORDER}
        self._pending = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self.batches = 0
        self.closed = False
        self._slots = asyncio.Semaphore(_CONCURRENT_FLUSHES)
        self._flushing: set[asyncio.Task[None]] = set()

    def put(self, write: Write) -> asyncio.Future[bool]:
        """Queue ``write`` for the next batch (written within ``WRITE_BATCH_DELAY`` seconds, or at once
        when ``WRITE_BATCH_SIZE`` writes are queued)."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._ops[(write.collection, write.kind)].append((write.op, fut))
        self._pending += 1
        self._wake.set()
        if self._pending >= self._max:
            self._full.set()
        return fut

    async def run(self, stop: asyncio.Event) -> None:
        """Flush until ``stop`` is set and nothing is left."""
        while True:
            if not self._pending:
                if stop.is_set():
                    if self._flushing:
                        await asyncio.wait(set(self._flushing))
                        continue
                    self.closed = True
                    return
                stopper = asyncio.ensure_future(stop.wait())
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({stopper, waker}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                waker.cancel()
                continue
            with contextlib.suppress(TimeoutError):  # gather a batch for a few milliseconds
                async with asyncio.timeout(self._delay):
                    await self._full.wait()
            await self._slots.acquire()
            task = asyncio.create_task(self._write_all(self._take()), name="webhook-batch")
            self._flushing.add(task)
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        self._slots.release()

    def _take(self) -> dict[Key, list[tuple[Op, asyncio.Future[bool]]]]:
        ops = self._ops
        self._ops = {k: [] for k in _ORDER}
        self._pending = 0
        self._wake.clear()
        self._full.clear()
        return ops

    async def flush(self) -> None:
        """Write everything queued now."""
        await self._write_all(self._take())

    async def _write_all(self, ops: dict[Key, list[tuple[Op, asyncio.Future[bool]]]]) -> None:
        for key in _ORDER:
            if ops[key]:
                try:
                    await self._write(key[0], ops[key])
                except Exception as exc:  # never leave a caller waiting on a future nobody will resolve
                    log.exception("batch write crashed", extra={"collection": key[0]})
                    self._settle(ops[key], set(), exc)
        self.batches += 1

    async def _write(self, name: str, items: list[tuple[Op, asyncio.Future[bool]]]) -> None:
        duplicates: set[int] = set()
        error: BaseException | None = None
        for attempt in range(_RETRIES):
            try:
                await self._repo.bulk_write(name, [op for op, _ in items])
                break
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                duplicates = {e["index"] for e in errors if e.get("code") == DUPLICATE_KEY}
                if len(duplicates) < len(errors):
                    error = exc
                break
            except PyMongoError as exc:
                if attempt == _RETRIES - 1:
                    error = exc
                else:
                    await asyncio.sleep(0.1 * 2**attempt)
            except Exception as exc:  # e.g. bson.errors.InvalidDocument: one bad operation, not the database
                if len(items) > 1:
                    log.error("batch refused; writing its operations one by one", extra={"error": repr(exc)})
                    for item in items:
                        await self._write(name, [item])
                    return
                error = exc
                break
        if error is not None:
            log.error("batch write failed", extra={"collection": name, "ops": len(items), "error": repr(error)})
        self._settle(items, duplicates, error)

    @staticmethod
    def _settle(
        items: list[tuple[Op, asyncio.Future[bool]]], duplicates: set[int], error: BaseException | None
    ) -> None:
        for i, (_, fut) in enumerate(items):
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
                fut.exception()  # retrieved: callers that do not await it must not warn
            else:
                fut.set_result(i not in duplicates)
