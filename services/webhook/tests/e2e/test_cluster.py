"""Event → webhook delivery with the api and worker on a real 3-primary Redis Cluster (``redis+cluster://``):
a real receiver gets the signed request, checked with the reference ``standardwebhooks`` library."""

from __future__ import annotations

from typing import Any

import pytest
from helpers_webhook import Api, Receiver, all_final
from standardwebhooks.webhooks import Webhook

from novapulse_devkit.testing import Servers, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def servers(servers: Servers, redis_cluster_url: str) -> Servers:
    """The session's MongoDB-wire server with the session's Redis Cluster."""
    return Servers(redis_cluster_url, servers.mongo_url)


async def test_an_event_is_delivered_to_a_real_receiver_on_a_redis_cluster(
    stack, client, receiver: Receiver, servers: Servers
) -> None:
    assert servers.redis_url.startswith("redis+cluster://")
    api_proc, _worker = stack(RATE_LIMIT_ENABLED="true")
    api: Api = client(api_proc.url)
    ep = await api.endpoint(receiver.url("ok"), event_types=["invoice.*"])
    secret = (await api.ok("GET", f"/endpoints/{ep['id']}/secret"))["secret"]
    accepted = await api.event("invoice.paid", {"amount": 42, "currency": "EUR"})
    assert accepted["messages"] == 1

    await wait_until(lambda: len(receiver.on("ok")) == 1, timeout=30, message="delivery")
    seen = receiver.on("ok")[0]
    payload: dict[str, Any] = Webhook(secret).verify(seen.body, seen.headers)
    assert (payload["type"], payload["data"]) == ("invoice.paid", {"amount": 42, "currency": "EUR"})

    msgs: list[dict[str, Any]] = []

    async def finished() -> bool:
        msgs[:] = await api.messages()
        return all_final(msgs, 1)()

    await wait_until(finished, timeout=30, message="message final")
    assert msgs[0]["status"] == "succeeded"
