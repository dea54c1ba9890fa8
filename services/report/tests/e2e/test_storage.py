"""The per-organisation storage limit (``MAX_BYTES_PER_ORG``): once an organisation's finished files reach it,
a new report is a ``409 Report storage full`` problem; deleting a file makes room again. Real api and worker
processes on the session's Redis and MongoDB-wire servers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from helpers_report import FEB, JAN, PREFIX, auth_rows, env, finished, seed
from pymongo import AsyncMongoClient

from novapulse_devkit.testing import ServiceProcess, TokenIssuer, start_together
from novapulse_report.repository import Repository

pytestmark = pytest.mark.e2e

LIMIT = 4096
"""Bytes: the smallest file below is several times this."""


async def test_storage_full_is_a_409_until_a_file_is_deleted(
    spawn: Callable[..., ServiceProcess], token_issuer: TokenIssuer, names: str, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    settings = token_issuer.env() | env(names, MAX_BYTES_PER_ORG=str(LIMIT))
    api = spawn("novapulse_report", "api", env=settings, start=False)
    worker = spawn("novapulse_report", "worker", env=settings, start=False)
    start_together([api, worker])
    repo = Repository(mongo[api.env["MONGO_DB"]])
    await seed(repo, auth_rows("o1", 300) + auth_rows("o2", 3))
    owner = {o: {"Authorization": f"Bearer {token_issuer.mint('u1', o, 'owner')}"} for o in ("o1", "o2")}
    base = api.url + PREFIX
    ask = {"type": "auth_activity", "format": "csv", "start": JAN, "end": FEB}
    async with aiohttp.ClientSession() as http:
        async with http.post(base, json=ask, headers=owner["o1"]) as r:
            assert r.status == 202
            first = await r.json()
        done = await finished(http, f"{base}/{first['id']}", owner["o1"])
        assert done["status"] == "succeeded"
        assert done["size"] > LIMIT

        other = ask | {"format": "ndjson"}  # not a duplicate of the first: a new report is needed
        async with http.post(base, json=other, headers=owner["o1"]) as r:
            assert r.status == 409
            assert r.headers["Content-Type"].startswith("application/problem+json")
            problem = await r.json()
            assert problem["status"] == 409
            assert problem["title"] == "Report storage full"
            assert str(LIMIT) in problem["detail"]
        async with http.post(base, json=ask, headers=owner["o1"]) as r:  # the stored one is still shared
            assert r.status == 202
            assert (await r.json())["deduplicated"] is True
        async with http.post(base, json=other, headers=owner["o2"]) as r:  # the limit is per organisation
            assert r.status == 202

        async with http.delete(f"{base}/{first['id']}", headers=owner["o1"]) as r:
            assert r.status == 204
        async with http.post(base, json=other, headers=owner["o1"]) as r:
            assert r.status == 202, await r.text()
