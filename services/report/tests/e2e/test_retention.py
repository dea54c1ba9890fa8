"""Files expire: after ``FILE_TTL_HOURS`` the retention job deletes the file, its manifest and parts, the
report reads ``expired`` and its links answer 410."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from helpers_report import FEB, JAN, PREFIX, auth_rows, env, finished, seed
from pymongo import AsyncMongoClient

from novapulse_devkit.testing import ServiceProcess, TokenIssuer, start_together, wait_until
from novapulse_report.repository import Repository

pytestmark = pytest.mark.e2e


async def test_expired_files_are_deleted(
    spawn: Callable[..., ServiceProcess], token_issuer: TokenIssuer, names: str, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    settings = token_issuer.env() | env(names, FILE_TTL_HOURS="0.001", RETENTION_INTERVAL_SECONDS="0.2")
    api = spawn("novapulse_report", "api", env=settings, start=False)
    worker = spawn("novapulse_report", "worker", env=settings, start=False)
    start_together([api, worker])
    db = mongo[api.env["MONGO_DB"]]
    await seed(Repository(db), auth_rows("o1", 3))
    owner = {"Authorization": f"Bearer {token_issuer.mint('u1', 'o1', 'owner')}"}
    ask = {"type": "auth_activity", "format": "ndjson", "start": JAN, "end": FEB}
    async with aiohttp.ClientSession() as http:
        async with http.post(api.url + PREFIX, json=ask, headers=owner) as r:
            location = r.headers["Location"]
        body = await finished(http, api.url + location, owner)
        assert body["status"] == "succeeded"
        assert body["row_count"] == 3
        report_id = body["id"]
        files = db["files.files"]

        async def purged() -> bool:
            return [d async for d in files.find({"metadata.report_id": report_id})] == []

        await wait_until(purged, timeout=20, message="expired files deleted")
        async with http.get(api.url + location, headers=owner) as r:
            assert (await r.json())["status"] == "expired"
        async with http.get(api.url + body["download_url"]) as r:
            assert r.status == 410

        async def counted() -> bool:  # the pass counts once it has handled the batch
            async with http.get(worker.url + "/api/v1/metrics") as r:
                return "novapulse_report_expired_total 1.0" in await r.text()

        await wait_until(counted, timeout=10, message="the expired report counted")
