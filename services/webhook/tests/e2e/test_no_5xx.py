"""Every route in the generated OpenAPI document, fed malformed input: never a 5xx.

(A stand-in for schemathesis, which is not in the workspace's dev dependencies.)"""

from __future__ import annotations

import re
from typing import Any

import pytest
from helpers_webhook import Api

pytestmark = pytest.mark.e2e

BODIES: list[Any] = [
    None,
    {},
    [],
    "text",
    0,
    {"url": None},
    {"url": 5, "event_types": "x", "headers": [], "enabled": "maybe"},
    {"url": "https://example.com/" + "é" * 3000},
    {"type": "a.b", "data": None},
    {"type": "a.b", "data": {"nested": [[[[[]]]]]}, "idempotency_key": ""},
    {"since": "yesterday"},
    {"since": "2020-01-01T00:00:00"},
    {"secret": "whsec_" + "A" * 200, "grace_seconds": -1},
    {"enabled": True, "concurrency": 10**9, "rate_limit": -1},
]
IDS = ["x", "a" * 65, "msg_..%2F..%2Fetc"]
QUERIES: list[dict[str, str]] = [
    {},
    {"limit": "-1"},
    {"limit": "abc"},
    {"cursor": "z" * 100},
    {"status": "weird"},
    {"since": "not-a-date"},
    {"endpoint_id": "x", "event_type": "y", "until": "2020-01-01T00:00:00Z"},
]


async def test_no_route_answers_5xx(spawn, webhook_env, client, http) -> None:
    api_proc = spawn("novapulse_webhook", "api", env=webhook_env)
    api: Api = client(api_proc.url)
    async with http.get(f"{api_proc.url}/api/v1/webhooks/openapi.json") as resp:
        doc = await resp.json()
    paths = [p for p in doc["paths"] if p.startswith("/api/v1/webhooks")]
    assert len(paths) >= 10
    ep = await api.endpoint("https://example.com/hook")
    checked = 0
    for template, ops in doc["paths"].items():
        for method in ops:
            for ident in [ep["id"], *IDS] if "{" in template else ["-"]:
                path = re.sub(r"\{[^}]+\}", ident, template)
                cases = [(None, q) for q in QUERIES] if method == "get" else [(b, {}) for b in BODIES]
                for body, query in cases:
                    headers = {"Authorization": f"Bearer {api.token}"}
                    kwargs: dict[str, Any] = {"headers": headers, "params": query}
                    if body is not None:
                        kwargs["json"] = body
                    async with http.request(method.upper(), api_proc.url + path, **kwargs) as resp:
                        await resp.read()
                        assert resp.status < 500, (method, path, body, query, resp.status)
                        checked += 1
        async with http.post(
            api_proc.url + template.replace("{", "").replace("}", ""),
            data=b"{not json",
            headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
        ) as resp:
            assert resp.status < 500
    assert checked > 200
