"""Operations routes over real Redis: stream and group statistics, dead letters, replay; the AsyncAPI file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from novapulse_devkit.testing import wait_until
from novapulse_runtime.bus import Event, EventBus
from novapulse_runtime.bus.asyncapi import build_document, render
from novapulse_runtime.catalog import CATALOG
from novapulse_runtime.http import create_app
from tests.bus.conftest import OPS_HEADERS, running

BusFactory = Callable[..., EventBus]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
async def test_operations_routes_show_streams_list_and_replay_dead_letters(make_bus: BusFactory) -> None:
    bus = make_bus("auth")
    rt = bus.rt
    consumer = bus.consumer("auth", max_deliveries=1)
    handled: list[str] = []
    broken = {"u1", "u2"}

    @consumer.on("mfa.enabled")
    async def handle(event: Event) -> None:
        if event.subject in broken:
            raise ValueError("nope")
        handled.append(event.subject or "")

    app = create_app(
        settings=rt.settings, metrics=rt.metrics, health=rt.health, tracer=rt.tracer, routes=bus.routes("/api/v1/auth")
    )
    async with TestClient(TestServer(app)) as client, running(consumer.run):
        for i in range(4):
            await bus.publish("mfa.enabled", {"user_id": f"u{i}", "org_id": "o1"}, subject=f"u{i}")
        await wait_until(lambda: len(handled) == 2, timeout=15, message="good events handled")

        async def two_dead() -> bool:
            return int(await rt.redis.xlen(bus.keys.dead("auth"))) == 2

        await wait_until(two_dead, timeout=15, message="two dead letters")

        # tenant tokens never open operations routes; only the operations token does
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            resp = await client.get("/api/v1/auth/events/streams", headers=headers)
            assert resp.status == 401
        resp = await client.get("/api/v1/auth/events/streams", headers=OPS_HEADERS)
        assert resp.status == 200
        streams = {s["name"]: s for s in (await resp.json())["streams"]}
        own = streams[bus.stream()]
        assert own["length"] == 4
        [group] = own["groups"]
        assert (group["name"], group["pending"], group["lag"]) == ("auth", 0, 0)
        assert group["consumers"] == 1
        assert group["consumer_list"][0]["name"] == consumer.name
        assert streams[bus.keys.dead("auth")]["length"] == 2
        # the API process of a consuming service declares no consumer; its group's streams are still listed
        await rt.redis.xgroup_create(bus.stream(), "notification", id="0")
        api_bus = make_bus("notification")
        listed = {s.name for s in await api_bus.operations.streams()}
        assert bus.stream() in listed
        assert bus.keys.stream("webhook") not in listed

        resp = await client.get("/api/v1/auth/events/dead-letters", params={"limit": "1"}, headers=OPS_HEADERS)
        page = await resp.json()
        assert resp.status == 200
        assert page["length"] == 2
        assert len(page["items"]) == 1
        first = page["items"][0]
        assert (first["reason"], first["deliveries"], first["type"]) == ("handler_failed", 1, "mfa.enabled")
        assert "ValueError: nope" in first["error"]
        resp = await client.get(
            "/api/v1/auth/events/dead-letters", params={"after": page["next_after"]}, headers=OPS_HEADERS
        )
        assert [d["entry_id"] for d in (await resp.json())["items"]] != [first["entry_id"]]

        resp = await client.post("/api/v1/auth/events/dead-letters/1-1/replay", headers=OPS_HEADERS)
        assert resp.status == 404
        assert resp.content_type == "application/problem+json"
        resp = await client.get("/api/v1/auth/events/dead-letters", params={"limit": "0"}, headers=OPS_HEADERS)
        assert resp.status == 422

        broken.clear()
        resp = await client.post(f"/api/v1/auth/events/dead-letters/{first['entry_id']}/replay", headers=OPS_HEADERS)
        assert resp.status == 200
        assert (await resp.json())["replayed"] == 1
        await wait_until(lambda: len(handled) == 3, timeout=15, message="replayed one handled")
        resp = await client.post("/api/v1/auth/events/dead-letters/replay", headers=OPS_HEADERS)
        assert (await resp.json())["replayed"] == 1
        await wait_until(lambda: len(handled) == 4, timeout=15, message="replayed all handled")
        assert sorted(handled) == ["u0", "u1", "u2", "u3"]
        resp = await client.get("/api/v1/auth/openapi.json", headers=OPS_HEADERS)
        assert "/api/v1/auth/events/dead-letters/{entry_id}/replay" in (await resp.json())["paths"]


@pytest.mark.unit
def test_the_committed_asyncapi_document_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "asyncapi.yaml").read_text()
    assert committed == render(), "run: python -m novapulse_runtime.bus.asyncapi"


@pytest.mark.unit
def test_asyncapi_document_describes_every_catalogue_type() -> None:
    doc = build_document()
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc["components"]["messages"]) == {t.name for t in CATALOG.all_types()}
    msg = doc["components"]["messages"]["user.registered"]
    assert msg["payload"]["properties"]["type"]["const"] == "user.registered"
    assert msg["x-novapulse-public"] is True
    assert doc["components"]["messages"]["invite.delivery_requested"]["x-novapulse-public"] is False
    assert doc["channels"]["auth"]["address"] == "novapulse:events:auth"
    assert "UserRegistered" in doc["components"]["schemas"]
