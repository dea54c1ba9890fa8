"""Delivery end to end: api and worker as real processes, a real receiver, signatures checked with the
reference ``standardwebhooks`` library."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from helpers_webhook import Api, Receiver, all_final
from standardwebhooks.webhooks import Webhook

from novapulse_devkit.testing import wait_until

pytestmark = pytest.mark.e2e


def verify(secret: str, seen: Any) -> dict[str, Any]:
    result: dict[str, Any] = Webhook(secret).verify(seen.body, seen.headers)
    return result


async def test_signed_delivery_verified_by_reference_library(stack, client, receiver: Receiver) -> None:
    api_proc, _worker = stack()
    api: Api = client(api_proc.url)
    ep = await api.endpoint(receiver.url("ok"), event_types=["invoice.*"], headers={"X-Tenant": "acme"})
    secret = (await api.ok("GET", f"/endpoints/{ep['id']}/secret"))["secret"]
    assert secret.startswith("whsec_")

    accepted = await api.event("invoice.paid", {"amount": 42, "currency": "EUR", "note": "café"})
    assert accepted["messages"] == 1
    await api.event("order.created", {"id": 1})  # filtered out

    await wait_until(lambda: len(receiver.on("ok")) == 1, timeout=30, message="delivery")
    seen = receiver.on("ok")[0]
    payload = verify(secret, seen)
    assert payload["type"] == "invoice.paid"
    assert payload["data"] == {"amount": 42, "currency": "EUR", "note": "café"}
    assert seen.headers["X-Tenant"] == "acme"
    assert seen.headers["Content-Type"] == "application/json"
    assert "traceparent" in seen.headers
    with pytest.raises(Exception):  # noqa: B017,PT011 - any verification error
        Webhook("whsec_" + "A" * 43 + "=").verify(seen.body, seen.headers)

    msgs: list[dict[str, Any]] = []

    async def finished() -> bool:
        msgs[:] = await api.messages()
        return all_final(msgs, 1)()

    await wait_until(finished, timeout=30, message="message final")
    assert msgs[0]["id"] == seen.headers["webhook-id"]
    assert msgs[0]["status"] == "succeeded"
    attempts = await api.attempts(msgs[0]["id"])
    assert [a["status"] for a in attempts] == [200]
    assert attempts[0]["outcome"] == "success"
    assert attempts[0]["request_headers"]["webhook-id"] == seen.headers["webhook-id"]
    full = await api.ok("GET", f"/messages/{msgs[0]['id']}")
    assert full["payload"] == json.loads(seen.body)


async def test_retries_follow_schedule_and_every_attempt_is_logged(stack, client, receiver: Receiver) -> None:
    api_proc, _worker = stack(WEBHOOK_RETRY_SCHEDULE="0,1,1,1")
    api: Api = client(api_proc.url)
    receiver.set("flaky", script=[(500, {}), (502, {}), (200, {})])
    await api.endpoint(receiver.url("flaky"))
    await api.event("invoice.paid", {"n": 1})

    try:
        await wait_until(lambda: len(receiver.on("flaky")) == 3, timeout=20, message="three attempts")
    except AssertionError:
        print("DEBUG", len(receiver.seen), await api.messages())
        raise
    seen = receiver.on("flaky")
    ids = {s.headers["webhook-id"] for s in seen}
    assert len(ids) == 1, "webhook-id is stable across retries"
    gaps = [b.at - a.at for a, b in itertools.pairwise(seen)]
    assert all(g >= 0.75 for g in gaps), gaps  # 1 s ± 20 % jitter
    assert [s.body for s in seen] == [seen[0].body] * 3, "byte-identical body on every attempt"

    msg_id = ids.pop()

    async def done() -> bool:
        return (await api.ok("GET", f"/messages/{msg_id}"))["status"] == "succeeded"

    await wait_until(done, timeout=10, message="succeeded")
    attempts = await api.attempts(msg_id)
    assert [a["status"] for a in attempts] == [500, 502, 200]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    failed = await api.messages(status="failed")
    assert failed == []
