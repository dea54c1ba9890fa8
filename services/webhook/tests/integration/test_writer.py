"""The group-commit writer against the real MongoDB-wire server: one operation that cannot be encoded does
not fail (or hang) the others in its batch."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from novapulse_webhook.constants import ATTEMPTS, MESSAGES
from novapulse_webhook.repository import Repository, Write
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
