"""The group-commit writer against the real MongoDB-wire server: one operation that cannot be encoded does
not fail (or hang) the others in its batch; a start record its attempt's result overtakes is not written."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from novapulse_runtime.clock import utcnow
from novapulse_runtime.metrics import Metrics
from novapulse_webhook.constants import ATTEMPTS, MESSAGES, MessageStatus
from novapulse_webhook.repository import Repository, Write, finish_op, message_doc, message_insert, start_op
from novapulse_webhook.writer import BatchWriter

pytestmark = pytest.mark.integration


async def test_a_bad_operation_is_isolated_and_every_caller_gets_an_answer(mongo_url: str, names: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    try:
        repo = Repository(client[f"w_{names}"])
        writer = BatchWriter(repo, delay=0.05)
        stop = asyncio.Event()
        runner = asyncio.create_task(writer.run(stop))
        good = [writer.put(Write.insert(ATTEMPTS, {"_id": f"a{i}", "n": i})) for i in range(3)]
        bad = writer.put(Write.insert(ATTEMPTS, {"_id": "bad", "text": "lone \ud800 surrogate"}))  # not UTF-8
        dup = writer.put(Write.insert(ATTEMPTS, {"_id": "a0", "n": 0}))
        upd = writer.put(Write.update(MESSAGES, {"_id": "none"}, {"$set": {"x": 1}}))
        async with asyncio.timeout(20):
            results = await asyncio.gather(*good, dup, upd)
            with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
                await bad
        assert results == [True, True, True, False, True]
        assert sorted(d["_id"] for d in await repo.attempts.find({}).to_list()) == ["a0", "a1", "a2"]
        stop.set()
        await runner
    finally:
        await client.drop_database(f"w_{names}")
        await client.close()


async def test_a_start_record_is_dropped_when_its_result_comes_first_and_written_otherwise(
    mongo_url: str, names: str
) -> None:
    """A start record still queued when the attempt's result arrives is not written (the result sets the
    same attempt count and clears ``inflight``); one whose attempt is still running is written, so a
    successor can log the attempt as lost."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    try:
        repo = Repository(client[f"w_{names}"])
        metrics = Metrics("webhook", "worker")
        writer = BatchWriter(repo, background_delay=0.2, metrics=metrics)
        stop = asyncio.Event()
        runner = asyncio.create_task(writer.run(stop))
        now = utcnow()
        fast, slow = (
            message_doc(
                org_id="o", endpoint_id="ep_x", event_id=e, event_type="t", body="{}", now=now, claim=e, lease_until=now
            )
            for e in ("c1", "c2")
        )
        async with asyncio.timeout(20):
            assert await asyncio.gather(writer.put(message_insert(fast)), writer.put(message_insert(slow))) == [
                True,
                True,
            ]
            started = [writer.put(start_op(d["_id"], d["claim"], 1, now, "http://x/")) for d in (fast, slow)]
            finished = writer.put(
                finish_op(
                    fast["_id"],
                    "c1",
                    status=MessageStatus.SUCCEEDED,
                    next_attempt_at=None,
                    last_status=200,
                    last_error=None,
                    now=now,
                    attempts=1,
                )
            )
            assert started[0].done()  # superseded at once: nothing written
            assert started[0].result() is True
            assert await asyncio.gather(*started, finished) == [True, True, True]
        assert writer.superseded == 1
        assert metrics.registry.get_sample_value("novapulse_webhook_start_records_dropped_total") == 1
        commands = "novapulse_webhook_store_commands_total"
        updates = metrics.registry.get_sample_value(commands, {"collection": MESSAGES, "kind": "update"})
        inserts = metrics.registry.get_sample_value(commands, {"collection": MESSAGES, "kind": "insert"})
        assert updates == 1  # the start record still running and the result, in one bulk write
        assert inserts is not None
        assert updates + inserts == writer.commands
        got_fast = await repo.messages.find_one({"_id": fast["_id"]})
        got_slow = await repo.messages.find_one({"_id": slow["_id"]})
        assert got_fast is not None
        assert got_slow is not None
        assert (got_fast["status"], got_fast["attempts"], "inflight" in got_fast, "claim" in got_fast) == (
            "succeeded",
            1,
            False,
            False,
        )
        assert (got_slow["attempts"], got_slow["inflight"]["attempt"], got_slow["claim"]) == (1, 1, "c2")
        stop.set()
        await runner
    finally:
        await client.drop_database(f"w_{names}")
        await client.close()
