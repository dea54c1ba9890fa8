"""After ``report.completed`` the notification service mails the requester a signed link that downloads the
file (the report and notification workers as real processes on one bus)."""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers_report import FEB, JAN, PREFIX, auth_rows, env, finished, seed
from pymongo import AsyncMongoClient

from novapulse_devkit.servers import free_port
from novapulse_devkit.testing import ServiceProcess, TokenIssuer, start_together, wait_until
from novapulse_report.repository import Repository
from novapulse_runtime.bus import EventBus
from novapulse_runtime.catalog.auth import UserRegistered
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings

pytestmark = pytest.mark.e2e

LINK = re.compile(r"http://127\.0\.0\.1:\d+/api/v1/reports/rp_[0-9a-f]{32}/download\?expires=\d+&sig=[0-9a-f]{64}")


async def test_the_requester_gets_the_link_by_mail(
    spawn: Callable[..., ServiceProcess],
    token_issuer: TokenIssuer,
    names: str,
    redis_url: str,
    mongo_url: str,
    mongo: AsyncMongoClient[dict[str, Any]],
    tmp_path: Path,
) -> None:
    if os.environ.get("SMTP_HOST"):
        pytest.skip("SMTP_HOST is set in this environment")
    api = spawn("novapulse_report", "api", env=token_issuer.env() | env(names), start=False)
    worker = spawn("novapulse_report", "worker", env=token_issuer.env() | env(names), start=False)
    start_together([api, worker])
    mail_dir = tmp_path / "mail"
    spawn(
        "novapulse_notification",
        "worker",
        env={
            "EVENTS_NAMESPACE": names,
            "MAIL_CATCHER_DIR": str(mail_dir),
            "MAIL_CATCHER_PORT": str(free_port()),
            "PUBLIC_BASE_URL": api.url,
        },
    )
    rt = Runtime(ServiceSettings(service_name="auth", redis_url=redis_url, mongo_url=mongo_url), "api")
    try:  # the notification service learns the requester's address from auth's event
        registered = UserRegistered(
            user_id="u1", org_id="o1", email="owner@example.test", name="Owner", role="owner", organization="O"
        )
        await EventBus(rt, namespace=names).publish("user.registered", registered, org_id="o1", subject="u1")
    finally:
        await rt.close()
    await seed(Repository(mongo[api.env["MONGO_DB"]]), auth_rows("o1", 5))
    owner = {"Authorization": f"Bearer {token_issuer.mint('u1', 'o1', 'owner')}"}
    async with aiohttp.ClientSession() as http:
        ask = {"type": "auth_activity", "format": "csv", "start": JAN, "end": FEB}
        async with http.post(api.url + PREFIX, json=ask, headers=owner) as r:
            location = r.headers["Location"]
        body = await finished(http, api.url + location, owner)
        assert body["status"] == "succeeded"

        def report_mail() -> list[Path]:
            return [p for p in mail_dir.glob("*.eml") if b"Your report" in p.read_bytes()]

        await wait_until(lambda: len(report_mail()) == 1, timeout=30, interval=0.1, message="the report mail")
        message = email.message_from_bytes(report_mail()[0].read_bytes(), policy=email.policy.default)
        assert message["To"] == "Owner <owner@example.test>"
        plain = message.get_body(preferencelist=("plain",))
        assert plain is not None
        match = LINK.search(plain.get_content())
        assert match is not None, plain.get_content()
        async with http.get(match[0]) as r:
            assert r.status == 200
            assert hashlib.sha256(await r.read()).hexdigest() == body["sha256"]
