"""List routes page by the runtime's one rule: a cursor only when another item exists, and an opaque cursor
that does not decode is a 422 like any invalid query parameter."""

from __future__ import annotations

from typing import Any

import pytest
from helpers_webhook import Api, Receiver

pytestmark = pytest.mark.e2e


async def _pages(api: Api, path: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = ""
    while True:
        params: dict[str, Any] = {"limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        data = await api.ok("GET", path, **params)
        pages.append([item["id"] for item in data["items"]])
        cursor = data["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 10, pages


async def test_an_exactly_full_last_page_hands_out_no_cursor(spawn, webhook_env, client, receiver: Receiver) -> None:
    api_proc = spawn("novapulse_webhook", "api", env=webhook_env)
    api: Api = client(api_proc.url, org="org-paging")
    created = [(await api.endpoint(receiver.url(f"p{i}")))["id"] for i in range(4)]
    newest_first = created[::-1]

    assert await _pages(api, "/endpoints", 4) == [newest_first]  # exactly full: no cursor to an empty page
    assert await _pages(api, "/endpoints", 2) == [newest_first[:2], newest_first[2:]]
    assert await _pages(api, "/endpoints", 3) == [newest_first[:3], newest_first[3:]]
    assert await _pages(api, "/endpoints", 5) == [newest_first]

    for i in range(2):  # 4 endpoints x 2 events: 8 messages
        await api.event("order.paid", {"n": i})
    messages = await _pages(api, "/messages", 4)
    assert [len(p) for p in messages] == [4, 4]
    assert len({m for p in messages for m in p}) == 8
    data = await api.ok("GET", "/messages", limit="2", endpoint_id=created[0])
    assert len(data["items"]) == 2
    assert data["next_cursor"] is None


async def test_a_cursor_that_does_not_decode_is_a_422(spawn, webhook_env, client) -> None:
    api_proc = spawn("novapulse_webhook", "api", env=webhook_env)
    api: Api = client(api_proc.url)
    for cursor in ["!!!", "not a cursor", "z", "abcde", "z" * 300]:
        for path in ("/endpoints", "/messages"):
            status, body = await api.call("GET", path, cursor=cursor)
            assert status == 422, (path, cursor, status, body)
            assert body["status"] == 422
