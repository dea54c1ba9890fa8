"""The report service as real processes (api and worker) on real Redis and MongoDB-wire servers: data sets
fed by events, each format requested → 202 → progress → downloaded and read back, deduplication, roles,
organisations, signed links, ranges, limits."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import openpyxl
import pytest
from helpers_report import FEB, JAN, PREFIX, SECRET, auth_rows, env, finished, seed
from pymongo import AsyncMongoClient
from pypdf import PdfReader

from novapulse_devkit.testing import ServiceProcess, TokenIssuer, start_together, wait_until
from novapulse_report.repository import Repository
from novapulse_report.signing import LinkSigner
from novapulse_runtime.bus import EventBus
from novapulse_runtime.catalog.auth import MfaChallengeFailed, UserRegistered
from novapulse_runtime.catalog.webhook import MessageFailed
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings

pytestmark = pytest.mark.e2e

INJECTION = '=HYPERLINK("http://evil.example","click")'


async def publish_source_events(redis_url: str, mongo_url: str, names: str, org: str) -> None:
    """Auth and webhook events, as their services publish them (one of them twice: at least once)."""
    for service in ("auth", "webhook"):
        rt = Runtime(ServiceSettings(service_name=service, redis_url=redis_url, mongo_url=mongo_url), "api")
        try:
            bus = EventBus(rt, namespace=names)
            if service == "auth":
                reg = UserRegistered(
                    user_id="u1", org_id=org, email="a@example.com", name="A", role="owner", organization="O"
                )
                event = await bus.publish("user.registered", reg, org_id=org, subject="u1")
                await bus.publish_events([event])  # the same event again
                fail = MfaChallengeFailed(user_id="u1", org_id=org, ip="203.0.113.9", attempts=2)
                await bus.publish("mfa.challenge_failed", fail, org_id=org, subject="u1")
            else:
                msg = MessageFailed(
                    message_id="m1",
                    endpoint_id="ep1",
                    org_id=org,
                    event_type="user.registered",
                    attempts=5,
                    last_error=INJECTION,
                )
                await bus.publish("webhook.message.failed", msg, org_id=org, subject="ep1")
        finally:
            await rt.close()


async def test_each_format_from_events_to_download(
    spawn: Callable[..., ServiceProcess],
    token_issuer: TokenIssuer,
    names: str,
    redis_url: str,
    mongo_url: str,
    mongo: AsyncMongoClient[dict[str, Any]],
) -> None:
    settings = token_issuer.env() | env(names)
    api = spawn("novapulse_report", "api", env=settings, start=False)
    worker = spawn("novapulse_report", "worker", env=settings, start=False)
    start_together([api, worker])
    owner = {"Authorization": f"Bearer {token_issuer.mint('u1', 'o1', 'owner')}"}
    member = {"Authorization": f"Bearer {token_issuer.mint('u2', 'o1', 'member')}"}
    stranger = {"Authorization": f"Bearer {token_issuer.mint('u3', 'o2', 'owner')}"}
    await publish_source_events(redis_url, mongo_url, names, "o1")
    facts = mongo[api.env["MONGO_DB"]]["facts"]

    async def projected() -> bool:
        return await facts.count_documents({"org_id": "o1"}) == 3

    await wait_until(projected, timeout=20, message="events projected into the data sets")
    now = datetime.now(UTC)
    window = {"start": (now - timedelta(hours=1)).isoformat(), "end": (now + timedelta(hours=1)).isoformat()}
    base = api.url + PREFIX
    async with aiohttp.ClientSession() as http:
        bodies: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        for fmt in ("csv", "ndjson", "xlsx", "pdf"):
            ask = {"type": "auth_activity", "format": fmt, "time_zone": "Asia/Kolkata", **window}
            async with http.post(base, json=ask, headers=owner) as r:
                assert r.status == 202, await r.text() + api.logs()[-2000:]
                assert r.headers["Retry-After"].isdigit()
                location = r.headers["Location"]
                first = await r.json()
                assert location == f"{PREFIX}/{first['id']}"
                assert first["status"] in ("queued", "running", "succeeded")
            body = await finished(http, api.url + location, owner)
            assert body["status"] == "succeeded", (body, worker.logs()[-3000:])
            assert body["row_count"] == 2
            assert body["progress"]["percent"] == 100.0
            assert body["progress"]["rows_done"] == 2
            assert body["progress"]["bytes"] == body["size"]
            async with http.get(api.url + body["download_url"]) as r:
                assert r.status == 200
                data = await r.read()
                assert r.headers["Accept-Ranges"] == "bytes"
                assert f'filename="auth_activity-{body["id"]}.{fmt}"' in r.headers["Content-Disposition"]
                assert r.headers["Content-Disposition"].startswith("attachment")
                files[fmt] = data
                bodies[fmt] = body
                assert (
                    r.content_type
                    == {
                        "csv": "text/csv",
                        "ndjson": "application/x-ndjson",
                        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                        "pdf": "application/pdf",
                    }[fmt]
                )
            assert hashlib.sha256(data).hexdigest() == body["sha256"]
            assert len(data) == body["size"]

        rows = list(csv.DictReader(io.StringIO(files["csv"].decode(), newline="")))
        assert [r["event"] for r in rows] == ["user.registered", "mfa.challenge_failed"]  # once each, time order
        assert all(r["time"].endswith("+05:30") for r in rows)
        assert rows[1]["ip"] == "203.0.113.9"
        assert rows[0]["email"] == "a@example.com"
        lines = [json.loads(line) for line in files["ndjson"].decode().splitlines()]
        assert [line["event"] for line in lines] == ["user.registered", "mfa.challenge_failed"]
        assert lines[0]["time"] == rows[0]["time"]
        book = openpyxl.load_workbook(io.BytesIO(files["xlsx"]), read_only=True)
        sheet = [list(r) for r in book["data"].iter_rows(values_only=True)]
        assert sheet[0][:3] == ["time", "event", "user_id"]
        assert sheet[2][1] == "mfa.challenge_failed"
        assert sheet[1][0] == rows[0]["time"]
        text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(files["pdf"])).pages)
        assert "Sign-in, MFA and membership activity" in text
        assert "Asia/Kolkata" in text
        assert "mfa.challenge_failed" in text

        # a range of the CSV
        async with http.get(api.url + bodies["csv"]["download_url"], headers={"Range": "bytes=5-14"}) as r:
            assert r.status == 206
            assert await r.read() == files["csv"][5:15]
            assert r.headers["Content-Range"] == f"bytes 5-14/{len(files['csv'])}"
        async with http.get(api.url + bodies["csv"]["download_url"], headers={"Range": "bytes=-4"}) as r:
            assert r.status == 206
            assert await r.read() == files["csv"][-4:]
        async with http.get(api.url + bodies["csv"]["download_url"], headers={"Range": "bytes=99999-"}) as r:
            assert r.status == 416
            assert r.headers["Content-Range"] == f"bytes */{len(files['csv'])}"

        # webhook outcomes: the injected formula is neutralised by default, kept with the opt-out
        for neutralize, expected in ((True, "'" + INJECTION), (False, INJECTION)):
            ask = {"type": "webhook_outcomes", "format": "csv", **window, "neutralize_formulas": neutralize}
            async with http.post(base, json=ask, headers=owner) as r:
                assert r.status == 202
                location = r.headers["Location"]
            body = await finished(http, api.url + location, owner)
            async with http.get(api.url + body["download_url"]) as r:
                (row,) = list(csv.DictReader(io.StringIO((await r.read()).decode(), newline="")))
            assert row["detail"] == expected
            assert row["attempts"] == "5"
            assert row["outcome"] == "failed"

        # deduplication: the same request gets the same report
        ask = {"type": "auth_activity", "format": "csv", "time_zone": "Asia/Kolkata", **window}
        async with http.post(base, json=ask, headers=owner) as r:
            assert r.status == 202
            again = await r.json()
        assert again["id"] == bodies["csv"]["id"]
        assert again["deduplicated"] is True
        # ...but not another organisation's, nor another zone
        async with http.post(base, json=ask | {"time_zone": "UTC"}, headers=owner) as r:
            assert (await r.json())["id"] != bodies["csv"]["id"]

        # organisation and role scope
        async with http.get(f"{base}/{bodies['csv']['id']}", headers=stranger) as r:
            assert r.status == 404
            assert (await r.json())["detail"] == "No such report"
        async with http.get(f"{base}/{bodies['csv']['id']}", headers=member) as r:
            assert r.status == 404  # auth activity is for owners and admins
        async with http.post(base, json=ask, headers=member) as r:
            assert r.status == 403
        async with http.get(base, headers=stranger) as r:
            assert (await r.json())["items"] == []
        async with http.get(f"{base}/rp_nope", headers=owner) as r:
            assert r.status == 404

        # the list pages by cursor, newest first
        seen: list[str] = []
        cursor = ""
        while True:
            async with http.get(base, params={"limit": "2", "cursor": cursor}, headers=owner) as r:
                page = await r.json()
            seen += [item["id"] for item in page["items"]]
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        assert len(seen) == 7
        assert seen == sorted(seen, reverse=True)
        async with http.get(base, params={"type": "webhook_outcomes"}, headers=owner) as r:
            assert len((await r.json())["items"]) == 2

        # links: tampered → 403, expired → 410
        link = bodies["pdf"]["download_url"]
        tampered = link.replace("sig=", "sig=0") if "sig=0" not in link else link.replace("sig=0", "sig=1")
        async with http.get(api.url + tampered) as r:
            assert r.status == 403
        longer = link.split("expires=")[0] + "expires=9999999999&" + link.split("&", 1)[1]
        async with http.get(api.url + longer) as r:
            assert r.status == 403
        expired = LinkSigner(SECRET.encode()).path(bodies["pdf"]["id"], "o1", 1_000_000)
        async with http.get(api.url + expired) as r:
            assert r.status == 410
        async with http.get(f"{base}/{bodies['pdf']['id']}/download") as r:
            assert r.status == 403

        # report.completed went out through the outbox, with the checksum and a signed link
        rt = Runtime(ServiceSettings(service_name="t", redis_url=redis_url, mongo_url=mongo_url), "api")
        try:
            stream = f"{names}:events:report"

            async def published() -> bool:
                entries = await rt.redis.xrange(stream)
                return sum(1 for _, f in entries if f.get("type") == "report.completed") >= 6

            await wait_until(published, timeout=20, message="report.completed relayed")
            entries = await rt.redis.xrange(stream)
            datas = [json.loads(f["data"]) for _, f in entries if f.get("type") == "report.completed"]
            pdf_event = next(d for d in datas if d["report_id"] == bodies["pdf"]["id"])
            assert pdf_event["sha256"] == bodies["pdf"]["sha256"]
            assert pdf_event["requested_by"] == "u1"
            async with http.get(api.url + pdf_event["download_path"]) as r:
                assert r.status == 200
                assert hashlib.sha256(await r.read()).hexdigest() == pdf_event["sha256"]
        finally:
            await rt.close()

        async with http.get(worker.url + "/api/v1/metrics") as r:
            exposition = await r.text()
        assert 'novapulse_report_runs_total{format="pdf",outcome="succeeded",type="auth_activity"} 1.0' in exposition
        assert 'novapulse_report_rows_total{format="csv"}' in exposition

        # cancel or delete
        async with http.delete(f"{base}/{bodies['ndjson']['id']}", headers=owner) as r:
            assert r.status == 204
        async with http.get(f"{base}/{bodies['ndjson']['id']}", headers=owner) as r:
            assert r.status == 404
        async with http.get(api.url + bodies["ndjson"]["download_url"]) as r:
            assert r.status == 404


async def test_limits_and_parameters(
    spawn: Callable[..., ServiceProcess], token_issuer: TokenIssuer, names: str, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    """Without a worker, reports stay queued: the in-flight limit, the row limit and bad parameters."""
    api = spawn(
        "novapulse_report",
        "api",
        env=token_issuer.env() | env(names, MAX_IN_FLIGHT_PER_ORG="1", MAX_ROWS_PER_REPORT="5", MAX_RANGE_DAYS="40"),
    )
    repo = Repository(mongo[api.env["MONGO_DB"]])
    await seed(repo, auth_rows("o1", 6))
    owner = {"Authorization": f"Bearer {token_issuer.mint('u1', 'o1', 'owner')}"}
    base = api.url + PREFIX
    ask = {"type": "auth_activity", "format": "csv", "start": JAN, "end": FEB}
    async with aiohttp.ClientSession() as http:
        async with http.post(base, json=ask, headers=owner) as r:
            assert r.status == 422
            problem = await r.json()
            assert problem["title"] == "Report too large"
            assert "6 rows" in problem["detail"]
        async with http.post(base, json=ask | {"filters": {"event": "mfa.enabled"}}, headers=owner) as r:
            assert r.status == 202
            queued = await r.json()
            assert queued["progress"]["estimated_total"] == 4
            assert queued["status"] == "queued"
        async with http.post(base, json=ask | {"filters": {"event": "user.login_blocked"}}, headers=owner) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "10"
        async with http.delete(f"{base}/{queued['id']}", headers=owner) as r:
            assert r.status == 204
        async with http.get(f"{base}/{queued['id']}", headers=owner) as r:
            assert (await r.json())["status"] == "cancelled"
        for bad in (
            ask | {"time_zone": "Mars/Olympus"},
            ask | {"end": "2026-03-01T00:00:00+00:00"},  # 59 days > 40
            ask | {"end": JAN},
            ask | {"start": "2026-01-01T00:00:00"},  # no offset
            ask | {"format": "docx"},
            ask | {"filters": {"email": "x"}},
            {k: v for k, v in ask.items() if k != "start"},
        ):
            async with http.post(base, json=bad, headers=owner) as r:
                assert r.status == 422, (bad, await r.text())
        async with http.get(base + "/types", headers=owner) as r:
            types = {t["name"]: t for t in (await r.json())["items"]}
            assert types["auth_activity"]["columns"][0] == {"name": "time", "type": "datetime"}
            assert types["workflow_runs"]["fed_by"] == [
                "workflow.run.started",
                "workflow.run.completed",
                "workflow.run.failed",
            ]
            assert types["notification_deliveries"]["fed_by"] == ["notification.delivered", "notification.failed"]
