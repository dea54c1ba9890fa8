"""The template service as a real process: notes through the API (paging, domain errors, roles) and the
members projection fed by auth's ``user.registered`` through the bus."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from novapulse_devkit.testing import ServiceProcess, TokenIssuer, wait_until
from novapulse_runtime.bus import EventBus
from novapulse_runtime.catalog.auth import UserRegistered
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings

pytestmark = pytest.mark.e2e

PREFIX = "/api/v1/example"


async def test_notes_through_the_api(
    spawn: Callable[..., ServiceProcess], token_issuer: TokenIssuer, names: str
) -> None:
    api = spawn("novapulse_example", "api", env=token_issuer.env() | {"EVENTS_NAMESPACE": names})
    owner = {"Authorization": f"Bearer {token_issuer.mint('u1', 'o1', 'owner')}"}
    member = {"Authorization": f"Bearer {token_issuer.mint('u2', 'o1', 'member')}"}
    stranger = {"Authorization": f"Bearer {token_issuer.mint('u3', 'o2', 'owner')}"}
    base = api.url + PREFIX
    async with aiohttp.ClientSession() as http:
        created = []
        for i in range(3):
            async with http.post(base + "/notes", json={"text": f"note {i}"}, headers=member) as r:
                assert r.status == 201, api.logs()[-3000:]
                created.append((await r.json())["id"])
        seen: list[str] = []
        cursor = ""
        while True:
            async with http.get(base + "/notes", params={"limit": "2", "cursor": cursor}, headers=owner) as r:
                page = await r.json()
            seen += [n["id"] for n in page["items"]]
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        assert seen == sorted(created, reverse=True)
        async with http.get(base + "/notes", headers=stranger) as r:  # another organisation sees nothing
            assert (await r.json())["items"] == []
        async with http.get(f"{base}/notes/{created[0]}", headers=stranger) as r:
            assert r.status == 404
            assert (await r.json())["detail"] == "No such note"
        async with http.get(base + "/notes/not-an-id", headers=owner) as r:
            assert r.status == 404
        async with http.delete(f"{base}/notes/{created[0]}", headers=member) as r:
            assert r.status == 403
        async with http.delete(f"{base}/notes/{created[0]}", headers=owner) as r:
            assert r.status == 204
        async with http.delete(f"{base}/notes/{created[0]}", headers=owner) as r:
            assert r.status == 404
            assert r.content_type == "application/problem+json"
        async with http.post(base + "/notes", json={"text": ""}, headers=member) as r:
            assert r.status == 422


async def test_the_worker_keeps_a_members_projection(
    spawn: Callable[..., ServiceProcess], names: str, redis_url: str, mongo_url: str
) -> None:
    worker = spawn("novapulse_example", "worker", env={"EVENTS_NAMESPACE": names})
    rt = Runtime(ServiceSettings(service_name="auth", redis_url=redis_url, mongo_url=mongo_url), "api")
    try:
        bus = EventBus(rt, namespace=names)
        data = UserRegistered(
            user_id="u9", org_id="o9", email="u9@example.com", name="U", role="member", organization="O"
        )
        for _ in range(2):  # at least once: the same event twice leaves one member
            await bus.publish("user.registered", data, org_id="o9", subject="u9")
        members = rt.mongo[worker.env["MONGO_DB"]]["members"]

        async def projected() -> bool:
            return await members.count_documents({"org_id": "o9"}) == 1

        await wait_until(projected, timeout=20, message="member projected")
    finally:
        await rt.close()
