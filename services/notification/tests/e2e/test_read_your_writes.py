"""Read your writes (issue 10 §4): an event that happens after the API answered follows the change. The
worker keeps no cache on the event path (preferences, user projection and organisation name are read from
MongoDB for every event), so a preference changed through the API applies to the very next event, with
no delay in between."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from helpers_notification import SmtpSink, producer

from novapulse_devkit.testing import start_together, wait_until
from novapulse_runtime.catalog import auth as A
from novapulse_runtime.catalog import webhook as W

pytestmark = pytest.mark.e2e

BASE = "/api/v1/notifications"


async def test_a_preference_changed_through_the_api_applies_to_the_next_event_at_once(
    spawn, sink: SmtpSink, token_issuer, redis_url, mongo_url, names, tmp_path: Path
):
    env = {
        **sink.env(),
        **token_issuer.env(),
        "EVENTS_NAMESPACE": names,
        "MAIL_CATCHER_DIR": str(tmp_path / "mail"),
        "RATE_LIMIT_ENABLED": "false",
    }
    org = f"org-{names}"
    worker = spawn("novapulse_notification", "worker", env=env, start=False)
    api = spawn("novapulse_notification", "api", env=env, start=False)
    start_together([worker, api])
    owner = {"Authorization": f"Bearer {token_issuer.mint('u1', org, 'owner')}"}
    async with (
        producer("auth", redis_url, mongo_url, names) as auth,
        producer("webhook", redis_url, mongo_url, names) as webhook,
        aiohttp.ClientSession(api.url) as http,
    ):
        await auth.publish(
            "user.registered",
            A.UserRegistered(
                user_id="u1", org_id=org, email="o@example.test", name="Olga", role="owner", organization="Acme"
            ),
            org_id=org,
        )
        await wait_until(lambda: len(sink.received) == 1, timeout=30, message=f"welcome; log:\n{worker.logs()}")

        async def disable(n: int) -> None:
            await webhook.publish(
                "webhook.endpoint.disabled",
                W.EndpointDisabled(endpoint_id=f"ep{n}", org_id=org, url=f"https://h{n}.test", reason="410"),
                org_id=org,
            )

        async def put(email_on: bool) -> None:
            body = {"categories": {"webhooks": {"email": email_on}}}
            async with http.put(f"{BASE}/preferences", json=body, headers=owner) as resp:
                assert resp.status == 200

        async def two_notices() -> bool:
            async with http.get(f"{BASE}/notifications", headers=owner) as resp:
                return len((await resp.json())["items"]) == 2

        # Off, then the event at once: no mail, the in-app notice still arrives.
        await put(False)
        await disable(1)
        await wait_until(two_notices, timeout=30, interval=0.1, message="the in-app notice")
        async with http.get(
            f"{BASE}/deliveries?channel=email&event_type=webhook.endpoint.disabled", headers=owner
        ) as r:
            [first] = (await r.json())["items"]
        assert (first["state"], first["reason"]) == ("suppressed", "turned off in preferences")
        # On again, then the event at once: the mail arrives.
        await put(True)
        await disable(2)
        await wait_until(lambda: len(sink.received) == 2, timeout=30, message=f"mail; log:\n{worker.logs()}")
        assert sink.received[-1].message["Subject"] == "Webhook endpoint disabled: https://h2.test"
        assert [m.message["Subject"] for m in sink.received].count("Webhook endpoint disabled: https://h1.test") == 0
