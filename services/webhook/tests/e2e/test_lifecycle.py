"""Endpoint lifecycle end to end: 410, Retry-After, rotation, resend, recover, test events, platform events,
organisation isolation, SSRF and bad input at the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers_webhook import Api, Receiver
from redis.asyncio import Redis
from standardwebhooks.webhooks import Webhook

from novapulse_devkit.testing import wait_until
from novapulse_runtime.bus.envelope import build, encode
from novapulse_runtime.catalog.auth import InviteDeliveryRequested, UserInvited

pytestmark = pytest.mark.e2e


async def message_for(api: Api, webhook_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def check() -> bool:
        found.update(await api.ok("GET", f"/messages/{webhook_id}"))
        return found["status"] == status

    await wait_until(check, timeout=timeout, message=f"message {status}")
    return found


async def test_410_disables_endpoint_and_announces_it(stack, client, receiver: Receiver, redis_url, names) -> None:
    api_proc, _ = stack()
    api: Api = client(api_proc.url)
    receiver.set("gone", status=410)
    ep = await api.endpoint(receiver.url("gone"))
    await api.event("invoice.paid", {"n": 1})
    await wait_until(lambda: len(receiver.on("gone")) == 1, timeout=30)
    await message_for(api, receiver.on("gone")[0].headers["webhook-id"], "failed")

    async def disabled() -> bool:
        ep_now = await api.ok("GET", f"/endpoints/{ep['id']}")
        return ep_now["enabled"] is False and "410" in (ep_now["disabled_reason"] or "")

    await wait_until(disabled, timeout=10, message="endpoint disabled")
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:

        async def announced() -> bool:
            entries = await redis.xrange(f"{names}:events:webhook")
            return {"webhook.endpoint.disabled", "webhook.message.failed"} <= {f["type"] for _, f in entries}

        await wait_until(announced, timeout=30, message="events on the webhook stream")
    finally:
        await redis.aclose()
    await api.event("invoice.paid", {"n": 2})
    assert (await api.event("invoice.paid", {"n": 3}))["messages"] == 0, "a disabled endpoint gets nothing"
    assert len(receiver.on("gone")) == 1


async def test_retry_after_is_honoured(stack, client, receiver: Receiver) -> None:
    api_proc, _ = stack(WEBHOOK_RETRY_SCHEDULE="0,0.2,0.2")
    api: Api = client(api_proc.url)
    receiver.set("busy", script=[(429, {"Retry-After": "2"}), (200, {})])
    await api.endpoint(receiver.url("busy"))
    await api.event("invoice.paid", {"n": 1})
    await wait_until(lambda: len(receiver.on("busy")) == 2, timeout=30)
    first, second = receiver.on("busy")
    assert second.at - first.at >= 1.9, "the 0.2 s schedule step was replaced by Retry-After: 2"
    msg = await message_for(api, first.headers["webhook-id"], "succeeded")
    assert [a["status"] for a in await api.attempts(msg["id"])] == [429, 200]


async def test_rotation_signs_with_both_secrets_then_resend_and_recover(stack, client, receiver: Receiver) -> None:
    api_proc, _ = stack(WEBHOOK_RETRY_SCHEDULE="0")
    api: Api = client(api_proc.url)
    ep = await api.endpoint(receiver.url("r"))
    old = (await api.ok("GET", f"/endpoints/{ep['id']}/secret"))["secret"]
    rotated = await api.ok("POST", f"/endpoints/{ep['id']}/secret/rotate", {})
    new = rotated["secret"]
    assert new != old
    assert [p["secret"] for p in rotated["previous"]] == [old]

    test = await api.ok("POST", f"/endpoints/{ep['id']}/test", expect=202)
    await wait_until(lambda: len(receiver.on("r")) == 1, timeout=30)
    seen = receiver.on("r")[0]
    assert seen.headers["webhook-id"] == test["message_id"]
    assert len(seen.headers["webhook-signature"].split()) == 2
    assert Webhook(old).verify(seen.body, seen.headers)["type"] == "webhook.test"
    assert Webhook(new).verify(seen.body, seen.headers)["data"]["endpoint_id"] == ep["id"]

    # Failures with a one-attempt schedule; then resend one and recover the rest.
    receiver.set("r", status=500)
    ids = []
    for i in range(3):
        await api.event("invoice.paid", {"i": i})
    await wait_until(lambda: len(receiver.on("r")) == 4, timeout=30)
    ids = [s.headers["webhook-id"] for s in receiver.on("r")[1:]]
    for mid in ids:
        await message_for(api, mid, "failed")
    receiver.set("r", status=200)
    await api.ok("POST", f"/messages/{ids[0]}/resend", expect=202)
    await message_for(api, ids[0], "succeeded")
    assert receiver.on("r")[-1].headers["webhook-id"] == ids[0]
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    recovered = await api.ok("POST", f"/endpoints/{ep['id']}/recover", {"since": since}, expect=202)
    assert recovered["messages"] == 2
    for mid in ids[1:]:
        await message_for(api, mid, "succeeded")
    attempts = await api.attempts(ids[1])
    assert [a["status"] for a in attempts] == [500, 200]


async def test_platform_events_public_only_and_organisations_isolated(
    stack, client, receiver: Receiver, redis_url, names
) -> None:
    api_proc, _ = stack()
    a: Api = client(api_proc.url, org="org-a")
    b: Api = client(api_proc.url, org="org-b")
    ep_a = await a.endpoint(receiver.url("a"))
    ep_b = await b.endpoint(receiver.url("b"), event_types=["user.*", "invite.*"])
    expires = datetime.now(UTC) + timedelta(days=7)
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        private = build(
            "invite.delivery_requested",
            InviteDeliveryRequested(
                invite_id="i1",
                org_id="org-b",
                email="x@example.com",
                role="member",
                token="SECRET-TOKEN",
                inviter_name="Ann",
                organization="B",
                expires_at=expires,
            ),
            source="auth",
            org_id="org-b",
        )
        public = build(
            "user.invited",
            UserInvited(
                invite_id="i1",
                org_id="org-b",
                email="x@example.com",
                role="member",
                invited_by="u1",
                expires_at=expires,
            ),
            source="auth",
            org_id="org-b",
            subject="i1",
        )
        for event in (private, public):
            await redis.xadd(f"{names}:events:auth", encode(event))  # type: ignore[arg-type]
    finally:
        await redis.aclose()
    await wait_until(lambda: len(receiver.on("b")) == 1, timeout=20, message="platform event delivered")
    secret_b = (await b.ok("GET", f"/endpoints/{ep_b['id']}/secret"))["secret"]
    payload = Webhook(secret_b).verify(receiver.on("b")[0].body, receiver.on("b")[0].headers)
    assert payload["type"] == "user.invited"
    assert payload["data"]["invite_id"] == "i1"
    await b.event("app.ping", {"x": 1})
    await a.event("app.ping", {"y": 2})
    await wait_until(lambda: len(receiver.on("a")) == 1, timeout=30)
    assert b"SECRET-TOKEN" not in b"".join(s.body for s in receiver.seen), "private command events never leave"
    assert all(b"org-b" not in s.body for s in receiver.on("a"))
    assert len(receiver.on("b")) == 1, "app.ping does not match org B's filters"

    # Organisation B cannot see or touch organisation A's things.
    assert (await b.call("GET", f"/endpoints/{ep_a['id']}"))[0] == 404
    assert (await b.call("GET", f"/endpoints/{ep_a['id']}/secret"))[0] == 404
    assert (await b.call("PATCH", f"/endpoints/{ep_a['id']}", {"enabled": False}))[0] == 404
    assert (await b.call("DELETE", f"/endpoints/{ep_a['id']}"))[0] == 404
    msg_a = receiver.on("a")[0].headers["webhook-id"]
    assert (await b.call("GET", f"/messages/{msg_a}"))[0] == 404
    assert (await b.call("GET", f"/messages/{msg_a}/attempts"))[0] == 404
    assert (await b.call("POST", f"/messages/{msg_a}/resend"))[0] == 404
    assert [e["id"] for e in (await b.ok("GET", "/endpoints"))["items"]] == [ep_b["id"]]
    assert all(m["endpoint_id"] == ep_b["id"] for m in await b.messages())


async def test_ssrf_and_bad_input_are_4xx(spawn, webhook_env, client) -> None:
    env = {**webhook_env, "WEBHOOK_ALLOWED_CIDRS": "", "WEBHOOK_ALLOW_HTTP": "false"}
    api_proc = spawn("novapulse_webhook", "api", env=env)
    api: Api = client(api_proc.url)
    for url in [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/hook",
        "https://[::1]/hook",
        "https://localhost/hook",
        "https://2130706433/hook",
        "https://0177.0.0.1/hook",
        "https://0x7f000001/hook",
        "http://example.com/hook",
        "https://user:pw@example.com/",
    ]:
        status, body = await api.call("POST", "/endpoints", {"url": url})
        assert status == 422, (url, status, body)
    bad_bodies: list[dict[str, Any]] = [
        {"url": "https://example.com/", "event_types": ["Bad Type"]},
        {"url": "https://example.com/", "headers": {"Content-Length": "1"}},
        {"url": "https://example.com/", "headers": {"webhook-signature": "x"}},
        {"url": "https://example.com/", "headers": {"Connection": "close"}},
        {"url": "https://example.com/", "headers": {"X-Ok": "a\r\nb"}},
        {"url": "https://example.com/", "secret": "whsec_short"},
        {"url": "https://example.com/", "concurrency": 0},
        {"url": "https://example.com/", "surprise": 1},
    ]
    for body in bad_bodies:
        status, problem = await api.call("POST", "/endpoints", body)
        assert status == 422, (body, status, problem)
    ep = await api.endpoint("https://example.com/hook")
    assert (await api.call("PATCH", f"/endpoints/{ep['id']}", {"url": "https://10.1.2.3/"}))[0] == 422
    status, _ = await api.call("POST", "/events", {"type": "x.y", "data": {"blob": "x" * 300_000}})
    assert status in (413, 422)
    assert (await api.call("POST", "/events", {"type": "user.registered", "data": {}}))[0] == 422
    assert (await api.call("POST", "/events", {"type": "Not Valid", "data": {}}))[0] == 422
    assert (await api.call("GET", "/messages", limit=0))[0] == 422
    assert (await api.call("GET", "/messages/nope"))[0] == 404
    member: Api = client(api_proc.url, role="member")
    assert (await member.call("POST", "/endpoints", {"url": "https://example.com/"}))[0] == 403
    assert (await member.call("GET", f"/endpoints/{ep['id']}/secret"))[0] == 403
    assert (await member.call("GET", f"/endpoints/{ep['id']}"))[0] == 200
    anonymous = Api(api_proc.url, "", api.session)
    assert (await anonymous.call("GET", "/endpoints"))[0] == 401
    first = await api.event("x.y", {"a": 1}, key="k1")
    again = await api.event("x.y", {"a": 1}, key="k1")
    assert again["duplicate"]
    assert again["event_id"] == first["event_id"]


def test_missing_encryption_key_stops_start_up(spawn, webhook_env) -> None:
    env = {**webhook_env, "WEBHOOK_SECRET_KEYS": ""}
    with pytest.raises(RuntimeError, match="WEBHOOK_SECRET_KEYS is required"):
        spawn("novapulse_webhook", "api", env=env)


async def test_endpoint_failing_too_long_is_disabled(stack, client, receiver: Receiver) -> None:
    api_proc, _ = stack(WEBHOOK_DISABLE_AFTER="1.5", WEBHOOK_RETRY_SCHEDULE="0,0.5,0.5,0.5,0.5,0.5,0.5,0.5")
    api: Api = client(api_proc.url)
    receiver.set("down", status=500)
    ep = await api.endpoint(receiver.url("down"))
    await api.event("invoice.paid", {"n": 1})

    async def disabled() -> bool:
        now = await api.ok("GET", f"/endpoints/{ep['id']}")
        return now["enabled"] is False

    await wait_until(disabled, timeout=20, message="disabled after failing for the period")
    now = await api.ok("GET", f"/endpoints/{ep['id']}")
    assert "no successful delivery since" in now["disabled_reason"]
    assert now["failing_since"] is not None
    count = len(receiver.on("down"))
    assert 3 <= count < 8, "disabled before the schedule ran out"
    # Re-enabling clears the failure state.
    again = await api.ok("PATCH", f"/endpoints/{ep['id']}", {"enabled": True})
    assert again["enabled"] is True
    assert again["failing_since"] is None
    assert again["disabled_reason"] is None


async def test_idempotent_retry_finishes_an_interrupted_fan_out(spawn, webhook_env, client) -> None:
    """A first request that stored the event but died before its messages: the retry with the same key
    creates them (once) instead of answering 'duplicate, 0 messages'."""
    import hashlib

    from pymongo import AsyncMongoClient

    api_proc = spawn("novapulse_webhook", "api", env=webhook_env)
    api: Api = client(api_proc.url, org="org-crash")
    await api.endpoint("https://example.com/hook", event_types=["x.y"])
    digest = hashlib.sha256(b"org-crash\x00k-crash").hexdigest()[:32]
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(api_proc.env["MONGO_URL"], tz_aware=True)
    try:
        db = mongo[api_proc.env["MONGO_DB"]]
        # what the interrupted first request left behind: the event, no messages, no fan-out count
        await db["events"].insert_one(
            {"_id": f"evt_k{digest}", "org_id": "org-crash", "type": "x.y", "created_at": datetime.now(UTC)}
        )
        again = await api.event("x.y", {"a": 1}, key="k-crash")
        assert again["duplicate"]
        assert again["messages"] == 1
        third = await api.event("x.y", {"a": 1}, key="k-crash")
        assert third["messages"] == 1
        assert await db["messages"].count_documents({"event_id": f"evt_k{digest}"}) == 1
    finally:
        await mongo.close()
