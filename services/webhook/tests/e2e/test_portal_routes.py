"""What the console's webhooks portal needs from the API: the subscribable event types, the message log
filtered by the last attempt's HTTP status, and recovery that counts first (``dry_run``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from helpers_webhook import Api, Receiver

from novapulse_devkit.testing import wait_until
from novapulse_runtime.catalog import CATALOG

pytestmark = pytest.mark.e2e


async def test_event_types_are_the_public_catalogue(stack, client) -> None:
    api_proc, _ = stack()
    member: Api = client(api_proc.url, role="member")
    listed = (await member.ok("GET", "/event-types"))["items"]
    names = [t["name"] for t in listed]
    assert names == sorted(t.name for t in CATALOG.all_types() if t.public)
    assert "webhook.test" in names
    assert "invite.delivery_requested" not in names  # private: never leaves the platform
    assert all(t["source"] and isinstance(t["description"], str) for t in listed)
    anonymous = Api(api_proc.url, "", member.session)
    status, _ = await anonymous.call("GET", "/event-types")
    assert status == 401


async def test_recover_dry_run_counts_then_recovers_once_and_http_status_filter(
    stack, client, receiver: Receiver
) -> None:
    api_proc, _ = stack(WEBHOOK_RETRY_SCHEDULE="0")
    api: Api = client(api_proc.url)
    ep = await api.endpoint(receiver.url("r"))
    receiver.set("r", status=500)
    for i in range(2):
        await api.event("invoice.paid", {"i": i})
    await wait_until(lambda: len(receiver.on("r")) == 2, timeout=30)

    async def both_failed() -> bool:
        return len(await api.messages(status="failed")) == 2

    await wait_until(both_failed, timeout=30)
    assert len(await api.messages(http_status=500)) == 2
    assert await api.messages(http_status=200) == []
    assert (await api.call("GET", "/messages", http_status=42))[0] == 422

    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    body = {"since": since, "dry_run": True}
    assert await api.ok("POST", f"/endpoints/{ep['id']}/recover", body, expect=202) == {"messages": 2, "dry_run": True}
    assert len(await api.messages(status="failed")) == 2  # a dry run changes nothing
    assert len(receiver.on("r")) == 2

    member: Api = client(api_proc.url, role="member")
    assert (await member.call("POST", f"/endpoints/{ep['id']}/recover", body))[0] == 403
    other: Api = client(api_proc.url, org="org-b")
    assert (await other.call("POST", f"/endpoints/{ep['id']}/recover", body))[0] == 404

    receiver.set("r", status=200)
    done = await api.ok("POST", f"/endpoints/{ep['id']}/recover", {"since": since}, expect=202)
    assert done == {"messages": 2, "dry_run": False}
    again = await api.ok("POST", f"/endpoints/{ep['id']}/recover", {"since": since}, expect=202)
    assert again["messages"] == 0  # idempotent: nothing is failed any more

    async def both_succeeded() -> bool:
        return len(await api.messages(http_status=200)) == 2

    await wait_until(both_succeeded, timeout=30)
    assert len(receiver.on("r")) == 4
