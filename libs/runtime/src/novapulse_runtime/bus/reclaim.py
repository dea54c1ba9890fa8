"""Leases of pending entries: a consumer renews the entries it holds (:class:`LeaseRenewer`) and reclaims
those other consumers stopped renewing (:class:`Reclaimer`, which also refreshes the pending/lag gauges).

An entry read by a consumer stays pending in the group until acknowledged. Its "lease" is its idle time:
``XPENDING … IDLE`` + ``XCLAIM`` hand an entry idle for ``claim_idle`` seconds to another consumer, and the
holder resets that idle time every ``claim_idle / 3`` s while it lives, so only the entries of a dead or
wedged consumer move.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from ..redisconn import queue_script
from .constants import FORGET_CONSUMER_AFTER, RENEW_FRACTION
from .envelope import DeadReason
from .settle import HeldEntry
from .streams import Entry, claim_idle_entries, consumers_info, groups_info, is_nogroup, lag_of, pending_range, wire

if TYPE_CHECKING:
    from .consumer import Consumer

log = logging.getLogger("novapulse.bus")

RENEW_SCRIPT = """
local renewed = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if #p > 0 and tonumber(p[1][3]) < tonumber(ARGV[3]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    renewed[#renewed + 1] = id
  end
end
return renewed
"""
"""Renew, atomically, the entries of one stream (KEYS[1]) that group ARGV[1] still delivers to consumer
ARGV[2] and that have been idle less than ARGV[3] ms (ids: ARGV[4..]): reset their idle time with
``XCLAIM … JUSTID`` (no delivery counted). Returns the ids renewed. Checking and claiming in one script means
an entry another consumer took over in between is never taken back."""


async def sleep_or_stop(delay: float, stop: asyncio.Event) -> bool:
    """Sleep up to ``delay`` seconds; True (at once) when ``stop`` is or gets set."""
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
    except TimeoutError:
        return False
    return True


class LeaseRenewer:
    """Renews, every ``claim_idle / 3`` seconds, every entry ``consumer`` holds (in flight or waiting for a
    retry) and the idempotency leases of their events. :attr:`passes` counts the renewal passes."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.passes = 0
        self._script = consumer.redis.register_script(RENEW_SCRIPT)

    async def run(self) -> None:
        """Renew until cancelled; a Redis failure is logged (entries not renewed within ``claim_idle`` go to
        other consumers) and the next pass tries again."""
        c = self.consumer
        interval = c.options.claim_idle / RENEW_FRACTION
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew()
            except RedisError as exc:
                log.warning(
                    "lease renewal failed; entries not renewed within claim_idle go to other consumers",
                    extra={"group": c.group, "consumer": c.name, "error": str(exc)},
                )
            self.passes += 1

    async def renew(self) -> None:
        """Renew every entry the consumer holds, in two round trips whatever their number: one script per
        stream (pipelined, :data:`RENEW_SCRIPT`) that renews the entries still delivered to this consumer and
        not yet reclaimable (idle below ``claim_idle``) — checked and claimed atomically, so an entry another
        consumer took over is never taken back — then one compare-and-extend of the idempotency leases of the
        renewed entries. Entries settled meanwhile are left out. Raises ``RedisError``."""
        c = self.consumer
        held = list(c.held)
        if not held:
            return
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in held:
            by_stream.setdefault(stream, []).append(entry_id)
        idle_ms = int(c.options.claim_idle * 1000)
        async with c.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                await queue_script(pipe, self._script, [stream], [c.group, c.name, idle_ms, *ids])
            replies = await pipe.execute(raise_on_error=False)
        event_ids: list[str] = []
        lost = 0
        for (stream, ids), reply in zip(by_stream.items(), replies, strict=True):
            if isinstance(reply, Exception):
                if is_nogroup(reply):
                    await c.recreate_groups()
                raise reply
            renewed = {r.decode() if isinstance(r, bytes) else str(r) for r in reply or []}
            lost += sum(1 for i in ids if i not in renewed and (stream, i) in c.held)  # not settled since
            for entry_id in renewed:
                event_id = c.held.get((stream, entry_id))
                if event_id is not None:
                    event_ids.append(event_id)
            c.metrics.renewed.labels(stream, c.group).inc(len(renewed))
        if lost:
            log.warning(
                "held entries no longer renewable (settled, reclaimable or taken over by another consumer)",
                extra={"group": c.group, "consumer": c.name, "count": lost},
            )
        if event_ids and c.idem is not None:
            async with c.redis.pipeline(transaction=False) as pipe:
                await c.idem.extend(pipe, event_ids)
                await pipe.execute()


class Reclaimer:
    """Every ``claim_interval`` seconds, takes over (``XPENDING … IDLE`` then ``XCLAIM``) entries of the
    consumer's streams idle for ``claim_idle`` — their holder died or wedged — as many as the consumer has
    free slots, and hands them to
    the consumer; an entry already delivered more than ``max_deliveries`` times is dead-lettered instead
    (reason ``handler_failed``). Every ``stats_interval`` seconds it also refreshes the pending and lag
    gauges and forgets consumers idle for :data:`~.constants.FORGET_CONSUMER_AFTER` with nothing pending."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    async def run(self, stop: asyncio.Event) -> None:
        """Reclaim until ``stop`` is set; Redis failures are logged at DEBUG and retried next interval."""
        c = self.consumer
        interval = c.options.claim_interval or max(0.05, min(1.0, c.options.claim_idle / 10))
        next_stats = 0.0
        while not await sleep_or_stop(interval, stop):
            try:
                await self.reclaim()
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + c.options.stats_interval
                    await self.update_gauges()
            except RedisError as exc:
                if is_nogroup(exc):
                    await c.recreate_groups()
                log.debug("reclaim pass failed", extra={"group": c.group, "error": str(exc)})

    async def reclaim(self) -> None:
        """One pass over the streams read (raises ``RedisError``): the idle entries there are free slots for
        are taken and dispatched; how many more are idle is left in ``reclaim_wanted``, so the consumer's reads
        leave that many slots to the next pass (reclaimed work first: a dead consumer's entries are older
        than anything still unread, and under a steady load the reads would otherwise take every slot that
        frees)."""
        c = self.consumer
        idle_ms = int(c.options.claim_idle * 1000)
        wanted = 0  # idle entries left for want of a free slot: new reads hold back for them (reclaim_wanted)
        try:
            for stream in c.reading:
                wanted += await self._reclaim_stream(stream, idle_ms)
        finally:
            before, c.reclaim_wanted = c.reclaim_wanted, min(wanted, c.concurrency)
            if c.reclaim_wanted < before:
                c.wake_readers()  # slots held back for the reclaim are the reads' again

    async def _reclaim_stream(self, stream: str, idle_ms: int) -> int:
        """Reclaim the idle entries of ``stream`` there are free slots for; how many more are idle."""
        c = self.consumer
        free = c.free_slots()
        claimed = await claim_idle_entries(c.redis, stream, c.group, c.name, idle_ms, free) if free > 0 else []
        left = 0
        if len(claimed) >= free:  # every slot taken: are idle entries still waiting? (ours now are not idle)
            left = len(await pending_range(c.redis, stream, c.group, "-", "+", c.concurrency, idle_ms=idle_ms))
        entries = [e for e in claimed if (stream, e[1]) not in c.held]
        if entries:
            await self._hand_over(stream, entries)
        return left

    async def _hand_over(self, stream: str, entries: list[Entry]) -> None:
        """Dispatch entries just reclaimed (dead-lettering those past ``max_deliveries``)."""
        c = self.consumer
        ids = [e[1] for e in entries]
        pending = await pending_range(c.redis, stream, c.group, ids[0], ids[-1], len(ids) + 100, consumer=c.name)
        counts = {str(p["message_id"]): int(p["times_delivered"]) for p in pending}
        c.metrics.reclaimed.labels(stream, c.group).inc(len(entries))
        log.info(
            "reclaimed pending entries of an idle consumer",
            extra={"group": c.group, "stream": stream, "count": len(entries)},
        )
        batch: list[Entry] = []
        for entry in entries:
            _, eid, fields, _problem = entry
            deliveries = counts.get(eid, 1)
            if fields and deliveries > c.options.max_deliveries:
                held = HeldEntry(stream, eid, fields, deliveries - 1)
                error = f"delivery cap {c.options.max_deliveries} reached (consumers died while handling)"
                c.spawn(held, c.settler.dead_letter(held, DeadReason.HANDLER_FAILED, error))
            else:
                batch.append(entry)
        await c.dispatch(batch, counts)

    async def update_gauges(self) -> None:
        """Set the pending and lag gauges of the group on every stream read; forget dead consumers."""
        c = self.consumer
        for stream in c.reading:
            for g in await groups_info(c.redis, stream):
                if g.get("name") != c.group:
                    continue
                c.metrics.pending.labels(stream, c.group).set(int(g.get("pending") or 0))
                lag = await lag_of(c.redis, stream, g)
                if lag is not None:
                    c.metrics.lag.labels(stream, c.group).set(lag)
            await self._forget_dead_consumers(stream)

    async def _forget_dead_consumers(self, stream: str) -> None:
        """Remove consumers idle for over ``FORGET_CONSUMER_AFTER`` with nothing pending (killed processes)."""
        c = self.consumer
        for info in await consumers_info(c.redis, stream, c.group):
            if (
                info["name"] != c.name
                and int(info["pending"]) == 0
                and int(info["idle"]) > FORGET_CONSUMER_AFTER * 1000
            ):
                await c.redis.xgroup_delconsumer(stream, c.group, wire(info["name"]))
