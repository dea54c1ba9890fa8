"""Every error is RFC 9457 problem+json with no stack trace; request ids travel; OpenAPI is generated."""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp
import pytest

from novapulse_devkit.testing import ServiceProcess

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


async def _problem(resp: aiohttp.ClientResponse, status: int) -> dict[str, object]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body = await resp.json(content_type=None)
    assert body["status"] == status
    assert {"type", "title", "status"} <= set(body)
    assert "Traceback" not in json.dumps(body)
    return dict(body)


async def test_error_shapes(sample: ServiceProcess, http: aiohttp.ClientSession) -> None:
    base = sample.url + "/api/v1/sample"
    async with http.get(base + "/nope") as r:
        await _problem(r, 404)
    async with http.delete(base + "/echo") as r:
        await _problem(r, 405)
        assert "POST" in r.headers.get("Allow", "")
    async with http.post(base + "/echo", data=b"name=x", headers={"Content-Type": "text/plain"}) as r:
        await _problem(r, 415)
    async with http.post(base + "/echo", data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        await _problem(r, 400)
    async with http.post(base + "/echo", json={"name": "", "count": 99}) as r:
        body = await _problem(r, 422)
        fields = {e["field"] for e in body["errors"]}  # type: ignore[attr-defined]
        assert fields == {"name", "count"}
    async with http.post(base + "/echo", json=[1, 2]) as r:
        await _problem(r, 422)
    big = b'{"name": "' + b"x" * 1_100_000 + b'", "count": 1}'
    async with http.post(base + "/echo", data=io.BytesIO(big), headers={"Content-Type": "application/json"}) as r:
        await _problem(r, 413)
    async with http.get(base + "/slow", params={"seconds": "soon"}) as r:
        await _problem(r, 422)
    async with http.get(base + "/boom") as r:
        body = await _problem(r, 500)
        assert "secret internal detail" not in json.dumps(body)
        assert body["request_id"] == r.headers["X-Request-ID"]
    async with http.post(base + "/echo", json={"name": "ok", "count": 3}) as r:
        assert r.status == 201
        assert await r.json() == {"name": "ok", "count": 3}
    assert "secret internal detail" in sample.logs()  # logged for operators, never sent to callers


async def test_request_id_in_and_out(sample: ServiceProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(sample.url + "/api/v1/health/live", headers={"X-Request-ID": "abc-123"}) as r:
        assert r.headers["X-Request-ID"] == "abc-123"
    async with http.get(sample.url + "/api/v1/health/live", headers={"X-Request-ID": "x" * 500}) as r:
        assert r.headers["X-Request-ID"] != "x" * 500
        assert len(r.headers["X-Request-ID"]) == 32


async def test_openapi_document(sample: ServiceProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(sample.url + "/api/v1/sample/openapi.json") as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["openapi"] == "3.1.0"
    echo = doc["paths"]["/api/v1/sample/echo"]["post"]
    ref = echo["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["properties"]["name"]["maxLength"] == 20
    assert "422" in echo["responses"]
    assert "429" in doc["paths"]["/api/v1/sample/limited"]["get"]["responses"]
    params = doc["paths"]["/api/v1/sample/slow"]["get"]["parameters"]
    assert params[0]["name"] == "seconds"
    assert params[0]["in"] == "query"


async def test_structured_logs_carry_request_and_trace_ids(sample: ServiceProcess, http: aiohttp.ClientSession) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"X-Request-ID": "req-trace-1", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    async with http.post(sample.url + "/api/v1/sample/echo", json={"name": "t", "count": 1}, headers=headers) as r:
        assert r.status == 201
    lines = [json.loads(line) for line in sample.logs().splitlines() if line.startswith("{")]
    mine = [e for e in lines if e.get("request_id") == "req-trace-1"]
    assert {e["msg"] for e in mine} >= {"echo", "request"}
    for entry in mine:
        assert entry["trace_id"] == trace_id
        assert entry["service"] == "sample"
        assert entry["level"] == "info"


async def test_trace_context_header_name_is_case_insensitive(
    sample: ServiceProcess, http: aiohttp.ClientSession
) -> None:
    """RFC 9110 section 5.1: field names are case-insensitive, so ``TraceParent`` continues the trace too."""
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    headers = {"X-Request-ID": "req-trace-2", "TraceParent": f"00-{trace_id}-b7ad6b7169203331-01"}
    async with http.post(sample.url + "/api/v1/sample/echo", json={"name": "t", "count": 1}, headers=headers) as r:
        assert r.status == 201
    lines = [json.loads(line) for line in sample.logs().splitlines() if line.startswith("{")]
    mine = [e for e in lines if e.get("request_id") == "req-trace-2"]
    assert mine
    assert {e["trace_id"] for e in mine} == {trace_id}


async def test_metrics_by_route_template(sample: ServiceProcess, http: aiohttp.ClientSession) -> None:
    for _ in range(3):
        async with http.get(sample.url + "/api/v1/sample/slow", params={"seconds": "0"}) as r:
            assert r.status == 200
    async with http.get(sample.url + "/api/v1/does/not/exist/123") as r:
        assert r.status == 404
    async with http.get(sample.url + "/api/v1/metrics") as r:
        assert r.status == 200
        assert r.content_type == "text/plain"
        text = await r.text()
    assert 'novapulse_http_requests_total{method="GET",route="/api/v1/sample/slow",status="200"} 3.0' in text
    assert 'route="unmatched",status="404"' in text
    assert "/does/not/exist" not in text
    assert "novapulse_http_request_duration_seconds_bucket" in text
    assert "process_resident_memory_bytes" in text


async def _raw_request(port: int, head: bytes, body: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    data = await reader.read(65536)
    writer.close()
    await writer.wait_closed()
    return data


async def test_hostile_input_is_a_4xx(sample: ServiceProcess, http: aiohttp.ClientSession) -> None:
    base = sample.url + "/api/v1/sample"
    json_headers = {"Content-Type": "application/json"}
    async with http.post(base + "/echo", data=b"[" * 100_000, headers=json_headers) as r:
        await _problem(r, 400)  # nesting bomb
    async with http.post(base + "/echo", data=b'{"name": "\\ud800", "count": 1}', headers=json_headers) as r:
        await _problem(r, 400)  # lone surrogate
    async with http.post(base + "/echo", data=b"", headers=json_headers) as r:
        await _problem(r, 400)
    async with http.get(base + "/whoami") as r:
        await _problem(r, 401)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    # a non-UTF-8 Authorization header, as raw bytes on the wire
    head = (
        b"GET /api/v1/sample/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff\xfe.a.b\r\n\r\n"
    )
    answer = await _raw_request(sample.port, head)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


# --- strict input: JSON, scalars and times (issue 10) -------------------------------------------------------
# One process per test; the cases of one kind are looped over inside it (a process start costs seconds).

NOT_STRICT_JSON = [
    b'{"type": "x.y", "data": {"ratio": NaN}}',
    b'{"type": "x.y", "data": {"big": 1e999}}',
    b'{"type": "x.y", "data": {"big": -1e999}}',
    b'{"type": "x.y", "data": {"v": Infinity}}',
    b'{"type": "x.y", "data": {"v": -Infinity}}',
    b'{"type": "x.y", "data": {"s": "\\udc00"}}',
    b'{"type": "x.y", "data": {"s": "\xff"}}',
]


async def test_bodies_are_strict_json(sample: ServiceProcess, http: aiohttp.ClientSession) -> None:
    for raw in NOT_STRICT_JSON:
        async with http.post(
            sample.url + "/api/v1/sample/events", data=raw, headers={"Content-Type": "application/json"}
        ) as r:
            body = await _problem(r, 400)
        assert str(body["detail"]).startswith("The body is not valid JSON"), (raw, body)


async def test_free_form_data_round_trips_exactly(sample: ServiceProcess, http: aiohttp.ClientSession) -> None:
    sent = {"type": "x.y", "data": {"ratio": 0.5, "big": 1.7976931348623157e308, "n": [1, None, "é"]}}
    async with http.post(sample.url + "/api/v1/sample/events", json=sent) as r:
        assert r.status == 202
        text = await r.text()
    assert "NaN" not in text
    assert "Infinity" not in text
    assert json.loads(text)["data"] == sent["data"]


LOOSE_QUERY = [
    ("limit", "0.5"),
    ("limit", "true"),
    ("limit", "1e3"),
    ("limit", " 5"),
    ("ratio", "false"),
    ("ratio", "NaN"),
    ("ratio", "inf"),
    ("flag", "1"),
    ("flag", "yes"),
    ("flag", "False"),
    ("since", "0.5"),
    ("since", "1700000000"),
    ("since", "2026-01-02"),
    ("since", "2026-01-02T03:04:05"),
    ("colour", "green"),
]


async def test_query_scalars_are_strict(sample: ServiceProcess, http: aiohttp.ClientSession) -> None:
    for field, value in LOOSE_QUERY:
        async with http.get(sample.url + "/api/v1/sample/items", params={field: value}) as r:
            body = await _problem(r, 422)
        where = [(e["location"], e["field"]) for e in body["errors"]]  # type: ignore[attr-defined]
        assert where == [("query", field)], (field, value, body)


async def test_query_values_read_as_their_declared_types(sample: ServiceProcess, http: aiohttp.ClientSession) -> None:
    params = [
        ("limit", "7"),
        ("ratio", "0.25"),
        ("flag", "true"),
        ("since", "2026-01-02T03:04:05+01:00"),
        ("colour", "blue"),
        ("tags", "a"),
        ("tags", "b"),
    ]
    async with http.get(sample.url + "/api/v1/sample/items", params=params) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    assert body == {
        "limit": 7,
        "ratio": 0.25,
        "flag": True,
        "since": "2026-01-02T03:04:05+01:00",
        "colour": "blue",
        "tags": ["a", "b"],
    }
    async with http.get(sample.url + "/api/v1/sample/items", params={"ratio": "1"}) as r:
        assert (await r.json())["ratio"] == 1.0  # an integer is a number
    for text in ("1.0", "1e2"):  # a number with no fractional part is an integer (JSON Schema 2020-12 §6.1.1)
        async with http.get(sample.url + "/api/v1/sample/items", params={"limit": text}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["limit"] == int(float(text))
    # a percent-encoded lone surrogate, as raw bytes on the wire
    head = b"GET /api/v1/sample/items?since=%ED%A0%80 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = await _raw_request(sample.port, head)
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 422")), answer[:300]


LOOSE_BODIES: list[tuple[dict[str, object], str]] = [
    ({"name": "a", "count": 0.5}, "count"),
    ({"name": "a", "count": 1.5}, "count"),
    ({"name": "a", "count": True}, "count"),
    ({"name": "a", "count": "3"}, "count"),
    ({"name": 5, "count": 1}, "name"),
]


async def test_body_scalars_and_times_are_strict(sample: ServiceProcess, http: aiohttp.ClientSession) -> None:
    for sent, field in LOOSE_BODIES:
        async with http.post(sample.url + "/api/v1/sample/echo", json=sent) as r:
            problem = await _problem(r, 422)
        assert [e["field"] for e in problem["errors"]] == [field], (sent, problem)  # type: ignore[attr-defined]
    for at in (0.5, "0.5", 1700000000, "2026-01-02T03:04:05", "2026-01-02"):
        async with http.post(sample.url + "/api/v1/sample/events", json={"type": "t", "data": {}, "at": at}) as r:
            problem = await _problem(r, 422)
        assert [e["field"] for e in problem["errors"]] == ["at"], (at, problem)  # type: ignore[attr-defined]
    async with http.post(sample.url + "/api/v1/sample/echo", json={"name": "a", "count": 2.0}) as r:
        assert r.status == 201
        assert await r.json() == {"name": "a", "count": 2}  # 2.0 is the integer 2 in JSON Schema
    good = {"type": "t", "data": {}, "at": "2026-01-02T03:04:05Z"}
    async with http.post(sample.url + "/api/v1/sample/events", json=good) as r:
        assert r.status == 202
        assert (await r.json())["at"] == "2026-01-02T03:04:05Z"


# --- the answer a route declares, and Allow -------------------------------------------------------------------


async def test_declared_status_and_allow(sample: ServiceProcess, http: aiohttp.ClientSession) -> None:
    base = sample.url + "/api/v1/sample"
    async with http.delete(base + "/things/abc") as r:  # no response model: 204, as documented
        assert r.status == 204
    async with http.get(base + "/openapi.json") as r:
        doc = await r.json()
    responses = doc["paths"]["/api/v1/sample/things/{thing_id}"]["delete"]["responses"]
    assert "204" in responses
    assert "200" not in responses
    # Allow names the methods of the target resource: /things/special is not /things/{thing_id}
    async with http.options(base + "/things/special") as r:
        assert r.status == 204
        assert r.headers["Allow"] == "OPTIONS, POST"
    async with http.options(base + "/things/other") as r:
        assert r.headers["Allow"] == "DELETE, OPTIONS"
    async with http.delete(base + "/things/special") as r:  # not routed to the template's DELETE
        await _problem(r, 405)
        assert r.headers["Allow"] == "OPTIONS, POST"
    async with http.post(base + "/things/special") as r:
        assert r.status == 200
    async with http.put(base + "/echo") as r:
        await _problem(r, 405)
        assert r.headers["Allow"] == "OPTIONS, POST"
