"""Bad input through the real worker process: the deliveries that cannot be sent are recorded ``failed`` with
their reason (read back over the API), nothing is dead-lettered or retried, and the next mail goes out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from helpers_notification import SmtpSink, producer

from novapulse_devkit.testing import start_together, wait_until
from novapulse_runtime.catalog import auth as A

pytestmark = pytest.mark.e2e


async def test_unsendable_addresses_fail_with_their_reason_and_the_worker_goes_on(
    spawn, sink: SmtpSink, token_issuer, redis_url, mongo_url, names, tmp_path: Path
):
    env = {
        **sink.env(),
        **token_issuer.env(),
        "EVENTS_NAMESPACE": names,
        "MAIL_CATCHER_DIR": str(tmp_path / "mail"),
    }
    org = f"org-{names}"
    worker = spawn("novapulse_notification", "worker", env=env, start=False)
    api = spawn("novapulse_notification", "api", env=env, start=False)
    start_together([worker, api])
    async with producer("auth", redis_url, mongo_url, names) as auth:
        for n, address in enumerate(["jörg@example.test", "two@@example.test", "ok@bücher.example"]):
            await auth.publish(
                "invite.delivery_requested",
                A.InviteDeliveryRequested(
                    invite_id=f"i{n}",
                    org_id=org,
                    email=address,
                    role="member",
                    token=f"t{n}",
                    inviter_name="Olga\r\nBcc: x@evil.test",
                    organization="<Acme>",
                    expires_at=datetime.now(UTC) + timedelta(days=1),
                ),
                org_id=org,
            )
        await wait_until(lambda: len(sink.received) == 1, timeout=30, message=f"mail; log:\n{worker.logs()}")
        [mail] = sink.received
        assert mail.rcpt_tos == ["ok@xn--bcher-kva.example"]
        assert mail.message["Subject"] == "Olga Bcc: x@evil.test invited you to join <Acme> on NovaPulse"
        assert "&lt;Acme&gt;" in mail.html
        headers = {"Authorization": f"Bearer {token_issuer.mint('u1', org, 'owner')}"}
        async with aiohttp.ClientSession(api.url) as http:

            async def three_settled() -> bool:
                async with http.get("/api/v1/notifications/deliveries", headers=headers) as resp:
                    items = (await resp.json())["items"]
                return len(items) == 3 and all(d["state"] in ("sent", "failed") for d in items)

            await wait_until(three_settled, timeout=30, interval=0.2, message="three settled deliveries")
            async with http.get("/api/v1/notifications/deliveries", headers=headers) as resp:
                items = {d["email"]: d for d in (await resp.json())["items"]}
        assert items["ok@bücher.example"]["state"] == "sent"
        assert items["jörg@example.test"]["state"] == "failed"
        assert "SMTPUTF8 is not supported" in items["jörg@example.test"]["reason"]
        assert items["two@@example.test"]["state"] == "failed"
        assert items["two@@example.test"]["reason"] == (
            "not a usable e-mail address: e-mail address needs exactly one @ with text on both sides"
        )
        assert int(await auth.rt.redis.xlen(f"{names}:dead:notification")) == 0
