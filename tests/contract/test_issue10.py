"""The cases of issue 10, against the real services: non-strict JSON is 400, loose scalars are 422,
``/logout`` answers what its document says."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from novapulse_devkit.testing import ServiceProcess, TokenIssuer

from .conftest import PREFIXES, start_api

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}

# (service, method, path, raw body or None, query, expected status, field named in errors or None)
CASES: dict[str, list[tuple[str, str, bytes | None, dict[str, str], int, str | None]]] = {
    "webhook": [
        ("POST", "/events", b'{"type": "x.y", "data": {"ratio": NaN, "big": 1e999}}', {}, 400, None),
        ("POST", "/events", b'{"type": "x.y", "data": {"big": 1e999}}', {}, 400, None),
        ("POST", "/events", b'{"type": "x.y", "data": {"v": -Infinity}}', {}, 400, None),
        ("POST", "/events", b'{"type": "x.y", "data": {"s": "\\udc00"}}', {}, 400, None),
        ("GET", "/messages", None, {"until": "0.5"}, 422, "until"),
        ("GET", "/messages", None, {"limit": "0.5"}, 422, "limit"),
        ("GET", "/messages", None, {"limit": "true"}, 422, "limit"),
        ("POST", "/endpoints/ep_x/secret/rotate", b'{"grace_seconds": false}', {}, 422, "grace_seconds"),
        ("POST", "/endpoints/ep_x/recover", b'{"since": 0.5}', {}, 422, "since"),
        ("POST", "/endpoints", b'{"url": "https://example.com/h", "concurrency": true}', {}, 422, "concurrency"),
    ],
    "notification": [
        ("PUT", "/preferences", b'{"categories": {"account": {"email": NaN}}}', {}, 400, None),
        ("GET", "/notifications", None, {"limit": "0.5"}, 422, "limit"),
        ("GET", "/notifications", None, {"unread": "1"}, 422, "unread"),
        ("GET", "/deliveries", None, {"state": "nope"}, 422, "state"),
    ],
    "workflow": [
        ("POST", "/definitions/wd_x/trigger", b'{"data": {"n": NaN}}', {}, 400, None),
        ("GET", "/runs", None, {"limit": "0.5"}, 422, "limit"),
        ("GET", "/runs", None, {"status": "nope"}, 422, "status"),
        ("GET", "/runs", None, {"since": "0.5"}, 422, "since"),
    ],
    "report": [
        ("POST", "", b'{"type": "auth_activity", "format": "csv", "start": NaN}', {}, 400, None),
        ("GET", "", None, {"limit": "0.5"}, 422, "limit"),
        ("GET", "", None, {"cursor": "%%"}, 422, "cursor"),
        ("GET", "", None, {"status": "nope"}, 422, "status"),
        (
            "POST",
            "",
            b'{"type": "auth_activity", "format": "csv", "start": "2026-01-01T00:00:00Z",'
            b' "end": "2026-01-02T00:00:00Z", "csv_bom": 1}',
            {},
            422,
            "csv_bom",
        ),
    ],
    "auth": [
        ("POST", "/login", b'{"email": "a@example.com", "password": NaN}', {}, 400, None),
        ("GET", "/members", None, {"limit": "0.5"}, 422, "limit"),
        ("GET", "/members", None, {"cursor": "%%"}, 422, "cursor"),
    ],
}


@pytest.mark.parametrize("service", sorted(PREFIXES))
async def test_issue_10_cases(
    service: str, spawn: Callable[..., ServiceProcess], token_issuer: TokenIssuer, names: str
) -> None:
    api = await start_api(service, spawn, token_issuer, names)
    base = api.process.url + PREFIXES[service]
    auth = {"Authorization": f"Bearer {api.token}"}
    async with aiohttp.ClientSession() as http:
        for method, path, raw, query, status, field in CASES[service]:
            headers = {**auth, **JSON} if raw is not None else auth
            async with http.request(method, base + path, data=raw, params=query, headers=headers) as r:
                body = await r.json(content_type=None)
                assert r.status == status, (method, path, raw, query, body)
                assert r.content_type == "application/problem+json"
            if field is None:
                assert str(body["detail"]).startswith("The body is not valid JSON"), body
            else:
                assert [e["field"] for e in body["errors"]] == [field], body
        if service == "auth":
            async with http.post(base + "/logout", headers=auth) as r:
                assert r.status == 204
            async with http.get(api.openapi_url) as r:
                responses = (await r.json())["paths"][PREFIXES["auth"] + "/logout"]["post"]["responses"]
            assert "204" in responses
            assert "200" not in responses
