"""A worker killed with SIGKILL mid-report: another worker takes the report over when the lease runs out,
resumes at the checkpoint, and the file is byte-for-byte the file of an uninterrupted run (same SHA-256); an
XLSX or PDF (whose document time is its own report's) holds the same cells or text."""

from __future__ import annotations

import hashlib
import io
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
import openpyxl
import pytest
from helpers_report import FEB, JAN, PREFIX, auth_rows, env, finished, seed
from pymongo import AsyncMongoClient
from pypdf import PdfReader

from novapulse_devkit.testing import ServiceProcess, TokenIssuer, wait_until
from novapulse_report.repository import Repository

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

ROWS = 8_000


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "pdf"])
async def test_kill9_mid_report_resumes_with_the_same_checksum(
    spawn: Callable[..., ServiceProcess],
    token_issuer: TokenIssuer,
    names: str,
    mongo: AsyncMongoClient[dict[str, Any]],
    fmt: str,
) -> None:
    settings = token_issuer.env() | env(names, CHUNK_ROWS="200", BATCH_ROWS="200")
    api = spawn("novapulse_report", "api", env=settings)
    db = mongo[api.env["MONGO_DB"]]
    repo = Repository(db)
    # the same rows in two organisations: one report is interrupted, the other is not
    await seed(repo, auth_rows("o1", ROWS) + auth_rows("o2", ROWS))
    ask = {"type": "auth_activity", "format": fmt, "start": JAN, "end": FEB, "time_zone": "Europe/Paris"}
    headers = {o: {"Authorization": f"Bearer {token_issuer.mint('u1', o, 'owner')}"} for o in ("o1", "o2")}
    async with aiohttp.ClientSession() as http:
        async with http.post(api.url + PREFIX, json=ask, headers=headers["o1"]) as r:
            assert r.status == 202
            victim = await r.json()
        doomed = spawn("novapulse_report", "worker", env=settings)
        seen: dict[str, Any] = {}

        async def midway() -> bool:
            async with http.get(f"{api.url}{PREFIX}/{victim['id']}", headers=headers["o1"]) as r:
                seen.update(await r.json())
            return seen["status"] == "running" and seen["progress"]["rows_done"] >= 400

        await wait_until(midway, timeout=30, interval=0.01, message="the report half done")
        doomed.signal(signal.SIGKILL)
        doomed.wait()
        at_kill = (await db["reports"].find_one({"_id": victim["id"]}) or {})["rows_done"]
        assert 0 < at_kill < ROWS, "the kill must land mid-report"
        progress = seen["progress"]
        assert progress["estimated_total"] == ROWS
        assert 0 < progress["percent"] < 100
        assert progress["bytes"] > 0

        spawn("novapulse_report", "worker", env=settings)  # takes over once the lease (2 s) runs out
        resumed = await finished(http, f"{api.url}{PREFIX}/{victim['id']}", headers["o1"], timeout=60)
        assert resumed["status"] == "succeeded"
        assert resumed["row_count"] == ROWS
        doc = await db["reports"].find_one({"_id": victim["id"]}) or {}
        assert doc["attempts"] == 2  # resumed by the second worker, not started over by the first
        files = db["files.files"]
        # a CSV's parts are its file (no copy); XLSX and PDF parts are staged rows, deleted once the file is
        expected = ["manifest"] + ["part"] * (ROWS // 200) if fmt == "csv" else ["file", "manifest"]

        async def stored() -> bool:
            found = [d["metadata"]["kind"] async for d in files.find({"metadata.report_id": victim["id"]})]
            return sorted(found) == expected

        await wait_until(stored, timeout=10, message=f"the stored files {expected}")

        async with http.post(api.url + PREFIX, json=ask, headers=headers["o2"]) as r:
            straight = await r.json()
        clean = await finished(http, f"{api.url}{PREFIX}/{straight['id']}", headers["o2"], timeout=60)
        assert clean["status"] == "succeeded"
        async with http.get(api.url + resumed["download_url"]) as r:
            whole = await r.read()
            assert hashlib.sha256(whole).hexdigest() == resumed["sha256"]
        if fmt == "pdf":
            # the resumed worker rendered the summary of every row: the rows of the first worker's parts
            # again, then the rest (each document's creation time is its own report's: compare the text)
            async with http.get(api.url + clean["download_url"]) as r:
                reference = await r.read()
            texts = [
                "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
                for data in (whole, reference)
            ]
            assert f"rows: {ROWS}" in texts[0]
            assert str(ROWS * 3 // 4) in texts[0]  # the chart's count of mfa.enabled, 3 rows in 4
            assert texts[0] == texts[1]
            return
        if fmt == "xlsx":
            # the document's creation time is each report's own, so compare the cells of the two files
            async with http.get(api.url + clean["download_url"]) as r:
                reference = await r.read()
            cells = [
                [
                    list(row)
                    for ws in openpyxl.load_workbook(io.BytesIO(data), read_only=True).worksheets
                    for row in ws.iter_rows(values_only=True)
                ]
                for data in (whole, reference)
            ]
            assert len(cells[0]) == ROWS + 1
            assert cells[0] == cells[1]
            return
        assert resumed["sha256"] == clean["sha256"]
        assert resumed["size"] == clean["size"]
        assert len(whole.decode().splitlines()) == ROWS + 1
        first, last = len(whole) // 3, 2 * len(whole) // 3  # a range across many parts
        async with http.get(api.url + resumed["download_url"], headers={"Range": f"bytes={first}-{last}"}) as r:
            assert r.status == 206
            assert await r.read() == whole[first : last + 1]
