"""Group commit of delivery bookkeeping: message inserts, attempt logs and message updates are gathered and
written with one ``bulk_write`` per collection and kind, so the database is not the bottleneck (one bulk
write of hundreds of operations costs about as much as a handful of single writes).

Two lanes, because only one kind of write is waited for:

- message inserts (fan-out awaits them before it acknowledges the event and hands the messages to their
  lanes) are gathered for ``WRITE_BATCH_DELAY`` (5 ms), up to four batches in flight at once;
- everything else (start records, attempt logs, message updates, releases), which nobody awaits, is
  gathered for ``WRITE_BACKGROUND_DELAY`` and written once the background batch before it is written
  (group commit: what arrives meanwhile joins the next batch), or at once when ``WRITE_BATCH_SIZE`` writes
  are queued.

Each command costs the MongoDB-wire server about as much as three to seven of its operations (measured
here: ~450 µs of server CPU per command, 60-150 µs per operation), so fewer, larger commands are most of
what the database costs per delivery.

An attempt's start record is dropped unwritten when the attempt's result arrives while the start record is
still queued (a fast receiver): the result sets the same attempt count and clears ``inflight``, so the start
record would change nothing (:attr:`BatchWriter.superseded` counts them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pymongo.errors import BulkWriteError, PyMongoError

from novapulse_runtime.metrics import Metrics

from .constants import (
    ATTEMPTS,
    ENDPOINTS,
    MESSAGES,
    WRITE_BACKGROUND_DELAY,
    WRITE_BATCH_DELAY,
    WRITE_BATCH_SIZE,
)
from .repository import DUPLICATE_KEY, START, Operation, Repository, Write

log = logging.getLogger("novapulse.webhook.writer")

Op = Operation
# Inserts first (fan-out waits for its message inserts before acknowledging the event), then updates.
_ORDER = ((MESSAGES, "insert"), (ATTEMPTS, "insert"), (MESSAGES, "update"), (ATTEMPTS, "update"), (ENDPOINTS, "update"))
_URGENT = ((MESSAGES, "insert"),)
_BACKGROUND = tuple(k for k in _ORDER if k not in _URGENT)
Key = tuple[str, str]
Item = tuple[Op, asyncio.Future[bool]]
_RETRIES = 5
_CONCURRENT_FLUSHES = 4


class _Lane:
    """One queue of the writer: its writes are gathered for ``delay`` seconds (or until ``max_batch`` are
    queued) and written with one bulk write per collection and kind; at most ``concurrency`` batches are
    in flight (1: group commit, the next batch waits for the one before)."""

    def __init__(self, writer: BatchWriter, kinds: tuple[Key, ...], delay: float, concurrency: int) -> None:
        self._writer = writer
        self.kinds = kinds
        self._delay = delay
        self._max = writer.max_batch
        self.ops: dict[Key, list[Item]] = {k: [] for k in kinds}
        self.starts: dict[str, Item] = {}  # queued start records, by claim key (repository.claim_key)
        self.pending = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._flushing: set[asyncio.Task[None]] = set()
        self.done = False

    def add(self, key: Key, item: Item) -> None:
        self.ops[key].append(item)
        self.queued()

    def queued(self) -> None:
        self.pending += 1
        self._wake.set()
        if self.pending >= self._max:
            self._full.set()

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            if not self.pending:
                if stop.is_set():
                    if self._flushing:
                        await asyncio.wait(set(self._flushing))
                        continue
                    self.done = True
                    return
                stopper = asyncio.ensure_future(stop.wait())
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({stopper, waker}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                waker.cancel()
                continue
            with contextlib.suppress(TimeoutError):  # gather a batch
                async with asyncio.timeout(self._delay):
                    await self._full.wait()
            await self._slots.acquire()  # group commit: with one slot, what arrives meanwhile joins this batch
            task = asyncio.create_task(self._writer.write_all(self.take()), name="webhook-batch")
            self._flushing.add(task)
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        self._slots.release()

    def take(self) -> dict[Key, list[Item]]:
        ops = self.ops
        self.ops = {k: [] for k in self.kinds}
        if self.starts:
            ops[(MESSAGES, "update")][:0] = self.starts.values()
            self.starts = {}
        self.pending = 0
        self._wake.clear()
        self._full.clear()
        return ops


class BatchWriter:
    """``put`` queues a :class:`~.repository.Write` and returns a future: True once it is durable (or, for
    a start record, superseded), False when it was an insert of a duplicate key (already stored), an
    exception when the database kept failing.

    Batches may land out of order (message inserts are written apart from the rest, and up to four batches
    of them at once, so one slow round trip does not hold every caller up): callers only ever put an update
    after the insert it depends on is durable, and updates of one message are guarded by its claim token, so
    their order does not matter.

    :param max_batch: writes that make a batch full: it is written at once (``WRITE_BATCH_SIZE``).
    :param delay: seconds message inserts are gathered (``WRITE_BATCH_DELAY``).
    :param background_delay: seconds the other writes are gathered (``WRITE_BACKGROUND_DELAY``).

    Counters: ``batches`` written, ``commands`` (bulk writes sent), ``superseded`` (start records dropped
    because the attempt's result came first); with ``metrics`` also
    ``novapulse_webhook_store_commands_total{collection,kind}`` (bulk writes sent, retries included) and
    ``novapulse_webhook_start_records_dropped_total``."""

    def __init__(
        self,
        repo: Repository,
        max_batch: int = WRITE_BATCH_SIZE,
        delay: float = WRITE_BATCH_DELAY,
        background_delay: float = WRITE_BACKGROUND_DELAY,
        metrics: Metrics | None = None,
    ) -> None:
        self._repo = repo
        self.max_batch = max_batch
        self._urgent = _Lane(self, _URGENT, delay, _CONCURRENT_FLUSHES)
        self._background = _Lane(self, _BACKGROUND, background_delay, 1)
        self.batches = 0
        self.commands = 0
        self.superseded = 0
        self._commands = (
            metrics.counter(
                "novapulse_webhook_store_commands_total",
                "Bulk writes the group-commit writer sent",
                ("collection", "kind"),
            )
            if metrics
            else None
        )
        self._dropped = (
            metrics.counter(
                "novapulse_webhook_start_records_dropped_total",
                "Attempt start records not written because the attempt's result came first",
            )
            if metrics
            else None
        )

    @property
    def closed(self) -> bool:
        """True once message inserts are no longer written (``run`` was told to stop and drained them)."""
        return self._urgent.done

    def put(self, write: Write) -> asyncio.Future[bool]:
        """Queue ``write`` for its lane's next batch (message inserts within ``WRITE_BATCH_DELAY`` seconds,
        the rest within ``WRITE_BACKGROUND_DELAY`` once the batch before is written; at once when
        ``WRITE_BATCH_SIZE`` writes are queued). An update that ``supersedes`` a queued start record drops
        it (its future answers True)."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        lane = self._urgent if (write.collection, write.kind) in _URGENT else self._background
        if write.kind == START:
            assert write.key is not None, "a start record names its claim (repository.start_op)"
            lane.starts[write.key] = (write.op, fut)
            lane.queued()
            return fut
        if write.supersedes is not None:
            held = lane.starts.pop(write.supersedes, None)
            if held is not None:
                held[1].set_result(True)
                self.superseded += 1
                if self._dropped is not None:
                    self._dropped.inc()
                lane.pending -= 1
        lane.add((write.collection, write.kind), (write.op, fut))
        return fut

    async def run(self, stop: asyncio.Event) -> None:
        """Flush until ``stop`` is set and nothing is left."""
        self._urgent.done = self._background.done = False
        await asyncio.gather(self._urgent.run(stop), self._background.run(stop))

    async def flush(self) -> None:
        """Write everything queued now."""
        await self.write_all(self._urgent.take())
        await self.write_all(self._background.take())

    async def write_all(self, ops: dict[Key, list[Item]]) -> None:
        """Write one batch: one bulk write per collection and kind, in ``_ORDER``; every future is settled."""
        for key in _ORDER:
            if ops.get(key):
                try:
                    await self._write(key, ops[key])
                except Exception as exc:  # never leave a caller waiting on a future nobody will resolve
                    log.exception("batch write crashed", extra={"collection": key[0]})
                    self._settle(ops[key], set(), exc)
        self.batches += 1

    async def _write(self, key: Key, items: list[Item]) -> None:
        name = key[0]
        duplicates: set[int] = set()
        error: BaseException | None = None
        for attempt in range(_RETRIES):
            try:
                self.commands += 1
                if self._commands is not None:
                    self._commands.labels(*key).inc()
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
                        await self._write(key, [item])
                    return
                error = exc
                break
        if error is not None:
            log.error("batch write failed", extra={"collection": name, "ops": len(items), "error": repr(error)})
        self._settle(items, duplicates, error)

    @staticmethod
    def _settle(items: list[Item], duplicates: set[int], error: BaseException | None) -> None:
        for i, (_, fut) in enumerate(items):
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
                fut.exception()  # retrieved: callers that do not await it must not warn
            else:
                fut.set_result(i not in duplicates)
