"""Issue 10/11 at the boundaries, end to end: a receiver's bad Retry-After never strands a message, bad
endpoint URLs are 422 with a field error (POST and PATCH), event data is strict JSON, and an idempotency key
is bound to its request."""

from __future__ import annotations

from typing import Any

import pytest
from helpers_webhook import Api, Receiver

from novapulse_devkit.testing import wait_until

pytestmark = pytest.mark.e2e


async def test_bad_retry_after_is_logged_and_the_schedule_advances(stack, client, receiver: Receiver) -> None:
    """``Retry-After: ²`` (isdigit() but not float()) used to leave the message in ``sending`` with no attempt
    logged. Now every throttled answer is an attempt; an invalid header is named in its error and the
    schedule's delay is used; a huge one is clamped to WEBHOOK_RETRY_AFTER_MAX."""
    api_proc, _ = stack(WEBHOOK_RETRY_SCHEDULE="0,0.3,0.3", WEBHOOK_RETRY_AFTER_MAX="1")
    api: Api = client(api_proc.url)
    cases = {
        "sup": "\u00b2",
        "neg": "-5",
        "garbage": "soon-ish",
        "huge": "9" * 40,
        "past": "Wed, 21 Oct 2015 07:28:00 GMT",
    }
    for name, value in cases.items():
        receiver.set(name, script=[(429, {"Retry-After": value}), (200, {})])
        await api.endpoint(receiver.url(name), event_types=["invoice.paid"])
    await api.event("invoice.paid", {"n": 1})
    for name in cases:
        await wait_until(lambda n=name: len(receiver.on(n)) == 2, timeout=20, message=f"{name} retried")
        msg_id = receiver.on(name)[0].headers["webhook-id"]

        async def done(m: str = msg_id) -> bool:
            return bool((await api.ok("GET", f"/messages/{m}"))["status"] == "succeeded")

        await wait_until(done, timeout=10, message=f"{name} succeeded")
        attempts = await api.attempts(msg_id)
        assert [(a["status"], a["outcome"]) for a in attempts] == [(429, "throttled"), (200, "success")]
        first_error = attempts[0]["error"]
        if name in ("sup", "neg", "garbage"):
            assert (
                first_error == f"HTTP 429; invalid Retry-After header {cases[name]!r} (RFC 9110 §10.2.3): schedule used"
            )
        else:
            assert first_error == "HTTP 429"
    first, second = receiver.on("huge")
    assert second.at - first.at >= 0.9, "a huge Retry-After is clamped to WEBHOOK_RETRY_AFTER_MAX (1 s), not ignored"


@pytest.mark.parametrize(
    "url",
    [
        "https://.localhost/",
        "https://" + "a" * 64 + ".example.com/",
        "https://example.com:0/",
        "https://xn--zz.example.com/",
        "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
        "https://[5f00::1]/",  # SRv6 SID, global for Python 3.11, not for the registry
    ],
)
async def test_bad_urls_are_422_with_a_field_error_on_create_and_patch(spawn, webhook_env, client, url: str) -> None:
    api_proc = spawn("novapulse_webhook", "api", env=webhook_env)
    api: Api = client(api_proc.url)
    status, problem = await api.call("POST", "/endpoints", {"url": url})
    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["url"]
    ep = await api.endpoint("https://example.com/hook")
    status, problem = await api.call("PATCH", f"/endpoints/{ep['id']}", {"url": url})
    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["url"]
    assert (await api.ok("GET", f"/endpoints/{ep['id']}"))["url"] == "https://example.com/hook"


async def test_event_data_is_strict_json_and_stored_bodies_read_back_strictly(
    stack, client, receiver: Receiver, http
) -> None:
    api_proc, _ = stack()
    api: Api = client(api_proc.url)
    await api.endpoint(receiver.url("j"))
    for raw in (b'{"type":"a.b","data":{"ratio":NaN}}', b'{"type":"a.b","data":{"big":1e999}}'):
        async with http.post(
            f"{api.base}/events",
            data=raw,
            headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
        ) as resp:
            # 400 once the runtime's HTTP parser refuses it; 422 (field "data") from the service otherwise
            assert resp.status in (400, 422), await resp.text()
    accepted = await api.event("a.b", {"ratio": 0.5, "text": "é\u2028"})
    assert accepted["messages"] == 1
    await wait_until(lambda: len(receiver.on("j")) == 1, timeout=20, message="delivered")
    body = receiver.on("j")[0].body
    assert body.decode().endswith('"data":{"ratio":0.5,"text":"é\u2028"}}')
    assert b"NaN" not in body
    assert b"Infinity" not in body
    assert len(await api.messages()) == 1, "nothing was stored for the refused events"
    msg = await api.ok("GET", f"/messages/{receiver.on('j')[0].headers['webhook-id']}")
    assert msg["payload"]["data"] == {"ratio": 0.5, "text": "é\u2028"}


async def test_idempotency_key_is_bound_to_the_request(spawn, webhook_env, client) -> None:
    """draft-ietf-httpapi-idempotency-key-header §2.7: a key reused with a different payload is 422."""
    api_proc = spawn("novapulse_webhook", "api", env=webhook_env)
    api: Api = client(api_proc.url)
    await api.endpoint("https://example.com/hook")
    first = await api.event("order.created", {"a": 1, "b": [1, 2]}, key="k-1")
    assert first["duplicate"] is False
    again = await api.event("order.created", {"b": [1, 2], "a": 1}, key="k-1")  # same request, other key order
    assert (again["event_id"], again["messages"], again["duplicate"]) == (first["event_id"], first["messages"], True)
    for changed in (
        {"type": "order.created", "data": {"a": 2, "b": [1, 2]}},
        {"type": "order.paid", "data": {"a": 1, "b": [1, 2]}},
    ):
        status, problem = await api.call("POST", "/events", {**changed, "idempotency_key": "k-1"})
        assert status == 422, problem
        assert [e["field"] for e in problem["errors"]] == ["idempotency_key"]
    # the key of another organisation is another key
    other: Api = client(api_proc.url, org="org-b")
    await other.endpoint("https://example.com/hook")
    theirs: dict[str, Any] = await other.event("order.created", {"a": 2}, key="k-1")
    assert theirs["duplicate"] is False
    assert len(await api.messages()) == 1


async def test_an_unexpected_error_while_holding_a_message_finishes_it(stack, client, receiver: Receiver) -> None:
    """A fault inside the delivery engine after the claim (here: an endpoint document whose ``headers`` is
    not a mapping, as a bad migration could leave it) is logged as an attempt ``failure`` with the real
    reason, and the message moves along its schedule to ``failed`` instead of staying in ``sending``."""
    from pymongo import AsyncMongoClient

    api_proc, _ = stack(WEBHOOK_RETRY_SCHEDULE="0,0.3,0.3")
    api: Api = client(api_proc.url)
    ep = await api.endpoint(receiver.url("corrupt"))
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(api_proc.env["MONGO_URL"], tz_aware=True)
    try:
        db = mongo[api_proc.env["MONGO_DB"]]
        await db["endpoints"].update_one({"_id": ep["id"]}, {"$set": {"headers": ["not", "a", "map"]}})
        accepted = await api.event("order.created", {"i": 1})
        assert accepted["messages"] == 1

        async def failed() -> bool:
            doc = await db["messages"].find_one({"endpoint_id": ep["id"]})
            return doc is not None and doc["status"] == "failed"

        await wait_until(failed, timeout=20, message="message finished as failed")
        msg = await db["messages"].find_one({"endpoint_id": ep["id"]})
        assert msg is not None
        assert msg["attempts"] == 3
        assert "claim" not in msg
        assert "inflight" not in msg
        attempts = await db["attempts"].find({"message_id": msg["_id"]}).sort("attempt", 1).to_list()
        assert [a["attempt"] for a in attempts] == [1, 2, 3]
        assert {a["outcome"] for a in attempts} == {"failure"}
        assert all(a["error"].startswith("internal error: ValueError: ") for a in attempts), attempts
        assert receiver.on("corrupt") == []
    finally:
        await mongo.close()


async def test_a_stored_body_with_nan_is_never_sent(stack, client, receiver: Receiver) -> None:
    """A message stored before payloads were strict (``NaN`` in its body) fails with the reason instead of
    reaching the receiver; ``GET /messages/{id}`` shows no payload rather than invalid JSON."""
    from datetime import UTC, datetime

    from pymongo import AsyncMongoClient

    api_proc, _ = stack()
    api: Api = client(api_proc.url)
    ep = await api.endpoint(receiver.url("legacy"))
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(api_proc.env["MONGO_URL"], tz_aware=True)
    try:
        db = mongo[api_proc.env["MONGO_DB"]]
        now = datetime.now(UTC)
        await db["messages"].insert_one(
            {
                "_id": "msg_legacy",
                "org_id": "org-a",
                "endpoint_id": ep["id"],
                "event_id": "evt_legacy",
                "event_type": "a.b",
                "body": '{"type":"a.b","timestamp":"2026-01-01T00:00:00Z","data":{"ratio":NaN}}',
                "status": "pending",
                "claim": None,
                "next_attempt_at": int(now.timestamp() * 1000),
                "attempts": 0,
                "round_start": 0,
                "last_status": None,
                "last_error": None,
                "created_at": now,
                "updated_at": now,
            }
        )

        async def failed() -> bool:
            return bool((await api.ok("GET", "/messages/msg_legacy"))["status"] == "failed")

        await wait_until(failed, timeout=20, message="legacy message failed")
        msg = await api.ok("GET", "/messages/msg_legacy")
        assert msg["payload"] is None
        assert msg["last_error"].startswith("the stored payload is not strict JSON, not sent: ")
        attempts = await api.attempts("msg_legacy")
        assert [(a["outcome"], a["status"]) for a in attempts] == [("failure", None)]
        assert receiver.on("legacy") == []
    finally:
        await mongo.close()
