"""The service as real processes: events published on the auth stream become mails in a real SMTP server and
in-app notifications read over HTTP with real access tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from helpers_notification import SmtpSink, producer

from novapulse_devkit.testing import start_together, wait_until
from novapulse_runtime.catalog import auth as A
from novapulse_runtime.catalog import webhook as W
from novapulse_runtime.catalog import workflow as N

pytestmark = pytest.mark.e2e

BASE = "/api/v1/notifications"


@pytest.fixture
def service_env(sink: SmtpSink, token_issuer, names: str, tmp_path: Path) -> dict[str, str]:
    return {
        **sink.env(),
        **token_issuer.env(),
        "EVENTS_NAMESPACE": names,
        "PUBLIC_BASE_URL": "https://app.example.test",
        "SMTP_RETRY_BASE_DELAY": "0.05",
        "MAIL_CATCHER_DIR": str(tmp_path / "mail"),
    }


async def test_register_invite_mfa_produce_mails_and_in_app_notifications(
    spawn, sink: SmtpSink, service_env, token_issuer, redis_url, mongo_url, names
):
    org = f"org-{names}"
    worker = spawn("novapulse_notification", "worker", env=service_env, start=False)
    api = spawn("novapulse_notification", "api", env=service_env, start=False)
    start_together([worker, api])
    async with producer("auth", redis_url, mongo_url, names) as auth:
        await auth.publish(
            "user.registered",
            A.UserRegistered(
                user_id="u1", org_id=org, email="owner@example.test", name="Olga", role="owner", organization="Acme"
            ),
            org_id=org,
        )
        await auth.publish(
            "invite.delivery_requested",
            A.InviteDeliveryRequested(
                invite_id="inv1",
                org_id=org,
                email="bob@example.test",
                role="member",
                token="secret-token-123",
                inviter_name="Olga",
                organization="Acme",
                expires_at=datetime.now(UTC) + timedelta(days=7),
            ),
            org_id=org,
        )
        await auth.publish("mfa.enabled", A.MfaEnabled(user_id="u1", org_id=org), org_id=org)
    await wait_until(lambda: len(sink.received) >= 3, timeout=30, message=f"3 mails; worker log:\n{worker.logs()}")
    [invite] = sink.to("bob@example.test")
    assert "https://app.example.test/invite/accept?token=secret-token-123" in invite.text
    subjects = sorted(m.message["Subject"] for m in sink.to("owner@example.test"))
    assert subjects == ["Two-factor authentication turned on", "Welcome to NovaPulse, Olga"]
    assert "secret-token-123" not in worker.logs()

    owner = {"Authorization": f"Bearer {token_issuer.mint('u1', org, 'owner')}"}
    member = {"Authorization": f"Bearer {token_issuer.mint('u2', org, 'member')}"}
    async with aiohttp.ClientSession(api.url) as http:
        async with http.get(f"{BASE}/notifications") as resp:
            assert resp.status == 401

        async def two_unread() -> bool:
            return (await _json(http, "GET", f"{BASE}/notifications", owner))["unread_count"] == 2

        await wait_until(two_unread, timeout=30, interval=0.2, message=f"in-app notices; log:\n{worker.logs()}")
        page = await _json(http, "GET", f"{BASE}/notifications", owner)
        assert [n["title"] for n in page["items"]] == [
            "Two-factor authentication turned on",
            "Welcome to NovaPulse, Olga",
        ]
        first = await _json(http, "GET", f"{BASE}/notifications?limit=1", owner)
        assert len(first["items"]) == 1
        assert first["next_cursor"]
        second = await _json(http, "GET", f"{BASE}/notifications?limit=1&cursor={first['next_cursor']}", owner)
        assert [n["id"] for n in second["items"]] == [page["items"][1]["id"]]
        assert second["next_cursor"] is None
        exactly_full = await _json(http, "GET", f"{BASE}/notifications?limit=2", owner)
        assert len(exactly_full["items"]) == 2
        assert exactly_full["next_cursor"] is None  # a full last page hands out no cursor to an empty page
        for garbage in ("not*base64", "A", "000000000000-" + "f" * 32):
            async with http.get(f"{BASE}/notifications", params={"cursor": garbage}, headers=owner) as resp:
                assert resp.status == 422, garbage
            async with http.get(f"{BASE}/deliveries", params={"cursor": garbage}, headers=owner) as resp:
                assert resp.status == 422, garbage
        async with http.post(f"{BASE}/notifications/not-an-id/read", headers=owner) as resp:
            problem = await resp.json(content_type=None)
            assert (resp.status, problem["title"], problem["detail"]) == (404, "Not Found", "No such notification")

        read = await _json(http, "POST", f"{BASE}/notifications/{page['items'][0]['id']}/read", owner)
        assert read["read_at"] is not None
        assert (await _json(http, "GET", f"{BASE}/notifications", owner))["unread_count"] == 1
        async with http.post(f"{BASE}/notifications/{page['items'][0]['id']}/read", headers=member) as resp:
            assert resp.status == 404  # someone else's notification
        assert (await _json(http, "POST", f"{BASE}/notifications/read-all", owner))["updated"] == 1
        assert (await _json(http, "GET", f"{BASE}/notifications?unread=true", owner))["items"] == []

        async with http.get(f"{BASE}/openapi.json") as resp:
            doc = await resp.json()
        assert {f"{BASE}/notifications", f"{BASE}/preferences", f"{BASE}/deliveries"} <= set(doc["paths"])
        async with http.get(f"{worker.url}/api/v1/metrics") as resp:
            metrics = await resp.text()
        assert 'novapulse_notification_deliveries_total{channel="email",outcome="sent"} 3.0' in metrics
        assert 'novapulse_notification_smtp_attempts_total{outcome="sent",relay="primary"} 3.0' in metrics

        prefs = await _json(http, "GET", f"{BASE}/preferences", owner)
        assert prefs["critical"] == ["security"]
        assert prefs["categories"]["reports"] == {"email": True, "in_app": True}
        async with http.put(
            f"{BASE}/preferences", json={"categories": {"security": {"email": False, "in_app": True}}}, headers=owner
        ) as resp:
            assert resp.status == 422
            assert resp.content_type == "application/problem+json"
        prefs = await _json(
            http,
            "PUT",
            f"{BASE}/preferences",
            owner,
            json={"categories": {"webhooks": {"email": False}}},
        )
        assert prefs["categories"]["webhooks"] == {"email": False, "in_app": True}
        assert prefs["categories"]["reports"] == {"email": True, "in_app": True}

        log = await _json(http, "GET", f"{BASE}/deliveries?channel=email", owner)
        assert sorted(d["email"] for d in log["items"]) == [
            "bob@example.test",
            "owner@example.test",
            "owner@example.test",
        ]
        assert all(d["state"] == "sent" and d["attempts"][0]["outcome"] == "sent" for d in log["items"])
        async with http.get(f"{BASE}/deliveries", headers=member) as resp:
            assert resp.status == 403
        other = {"Authorization": f"Bearer {token_issuer.mint('x1', 'other-org', 'owner')}"}
        assert (await _json(http, "GET", f"{BASE}/deliveries", other))["items"] == []
        async with http.get(f"{BASE}/deliveries?limit=0", headers=owner) as resp:
            assert resp.status == 422

    # Preferences apply to the worker: webhook mail is now off for the owner, the in-app notice still arrives.
    async with producer("webhook", redis_url, mongo_url, names) as webhook:
        await webhook.publish(
            "webhook.endpoint.disabled",
            W.EndpointDisabled(endpoint_id="ep1", org_id=org, url="https://h.example.test", reason="410 Gone"),
            org_id=org,
        )
    async with aiohttp.ClientSession(api.url) as http:

        async def webhook_notice() -> bool:
            page = await _json(http, "GET", f"{BASE}/notifications", owner)
            return page["unread_count"] == 1

        await wait_until(webhook_notice, timeout=30, interval=0.2, message="webhook in-app notice")
        log = await _json(http, "GET", f"{BASE}/deliveries?event_type=webhook.endpoint.disabled&channel=email", owner)
        assert [(d["state"], d["reason"]) for d in log["items"]] == [("suppressed", "turned off in preferences")]
    assert len(sink.received) == 3


async def test_event_missing_fields_goes_to_dead_letters(
    spawn, sink: SmtpSink, service_env, redis_url, mongo_url, names
):
    org = f"org-{names}"
    worker = spawn("novapulse_notification", "worker", env={**service_env, "EVENT_MAX_DELIVERIES": "2"})
    dead = f"{names}:dead:notification"
    async with producer("auth", redis_url, mongo_url, names) as auth:
        bad = auth.event("mfa.enabled", {"user_id": "u1", "org_id": org}, org_id=org)
        fields = bad.to_fields()
        fields["data"] = '{"user_id": "u1"}'  # org_id missing
        await auth.rt.redis.xadd(auth.stream(), fields)  # type: ignore[arg-type]
        async with producer("workflow", redis_url, mongo_url, names) as workflow:
            await workflow.publish(
                "notification.requested",
                N.NotificationRequested(org_id=org, template="security_notice", user_id="u1"),
                org_id=org,
            )

        async def dead_lettered() -> bool:
            return int(await auth.rt.redis.xlen(dead)) == 2

        await wait_until(dead_lettered, timeout=30, interval=0.1, message=f"dead letters; log:\n{worker.logs()}")
        entries = {e["type"]: e for _id, e in await auth.rt.redis.xrange(dead)}
        assert entries["mfa.enabled"]["dead_reason"] == "invalid_data"
        assert "org_id" in entries["mfa.enabled"]["dead_error"]
        assert entries["notification.requested"]["dead_reason"] == "rejected"  # at once, not after retries
        assert entries["notification.requested"]["dead_deliveries"] == "1"
        assert "cannot be requested" in entries["notification.requested"]["dead_error"]
    assert sink.received == []


async def _json(http: aiohttp.ClientSession, method: str, path: str, headers: dict[str, str], **kw) -> dict:
    async with http.request(method, path, headers=headers, **kw) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 200, body
        return body
