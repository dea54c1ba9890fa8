"""Strict request parsing, resource-exact Allow, dependency errors and the OpenAPI shape, without a process."""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import pytest
from aiohttp import web
from multidict import MultiDict
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema
from pymongo.errors import AutoReconnect, NetworkTimeout, OperationFailure, ServerSelectionTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from novapulse_runtime.middleware import unavailable_dependency
from novapulse_runtime.openapi import build_openapi
from novapulse_runtime.parsing import parse_body, parse_query
from novapulse_runtime.problems import ProblemError
from novapulse_runtime.routes import Routes, RouteTable

pytestmark = pytest.mark.unit


class State(enum.StrEnum):
    OPEN = "open"
    SHUT = "shut"


class Inner(BaseModel):
    at: datetime
    n: int


class Body(BaseModel):
    count: int = Field(ge=0, le=10)
    ratio: float | None = None
    on: bool = False
    data: dict[str, Any] = Field(default_factory=dict)
    items: list[Inner] = Field(default_factory=list)


class Query(BaseModel):
    limit: int = Field(default=5, ge=1, le=100)
    state: State | None = None
    since: datetime | None = None
    tags: list[int] = Field(default_factory=list)


def _fails(raw: bytes, status: int) -> ProblemError:
    with pytest.raises(ProblemError) as info:
        parse_body(raw, Body)
    assert info.value.status == status, info.value.detail
    return info.value


@pytest.mark.parametrize(
    "raw",
    [
        b'{"count": 1, "data": {"x": NaN}}',
        b'{"count": 1, "data": {"x": 1e999}}',
        b'{"count": 1, "data": {"x": [-Infinity]}}',
        b'{"count": 1, "ratio": Infinity}',
        b'{"count": 1, "data": {"s": "\\ud800"}}',
        b'{"count": 1, "data": {"s": "\xc3\x28"}}',
        b"[" * 5000 + b"]" * 5000,
        b"",
    ],
)
def test_bodies_that_are_not_strict_json_are_400(raw: bytes) -> None:
    _fails(raw, 400)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"count": 0.5}', "count"),
        (b'{"count": true}', "count"),
        (b'{"count": "3"}', "count"),
        (b'{"count": 1, "ratio": false}', "ratio"),
        (b'{"count": 1, "on": 0}', "on"),
        (b'{"count": 1, "items": [{"at": "0.5", "n": 1}]}', "items.0.at"),
        (b'{"count": 1, "items": [{"at": 1700000000, "n": 1}]}', "items.0.at"),
        (b'{"count": 1, "items": [{"at": "2026-01-02T03:04:05Z", "n": 1.5}]}', "items.0.n"),
    ],
)
def test_loose_scalars_in_bodies_are_422(raw: bytes, field: str) -> None:
    err = _fails(raw, 422)
    assert [e["field"] for e in err.extra["errors"]] == [field]


def test_strict_body_keeps_what_json_schema_accepts() -> None:
    body = parse_body(
        b'{"count": 2.0, "ratio": 1, "on": true, "data": {"big": 1.5e308, "f": 2.0},'
        b' "items": [{"at": "2026-01-02T03:04:05.5+02:00", "n": 3e0}]}',
        Body,
    )
    assert isinstance(body, Body)
    assert body.count == 2
    assert isinstance(body.count, int)
    assert body.ratio == 1.0
    assert body.data == {"big": 1.5e308, "f": 2.0}
    assert isinstance(body.data["f"], float)  # free-form data is left as sent
    assert body.items[0].n == 3
    assert body.items[0].at.utcoffset() is not None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0.5"}, "limit"),
        ({"limit": "true"}, "limit"),
        ({"limit": "0x10"}, "limit"),
        ({"limit": "NaN"}, "limit"),
        ({"state": "ajar"}, "state"),
        ({"since": "0.5"}, "since"),
        ({"since": "2026-01-02"}, "since"),
        ({"tags": "x"}, "tags.0"),
    ],
)
def test_loose_query_values_are_422(query: dict[str, str], field: str) -> None:
    with pytest.raises(ProblemError) as info:
        parse_query(MultiDict(query), Query)
    assert info.value.status == 422
    assert [(e["location"], e["field"]) for e in info.value.extra["errors"]] == [("query", field)]


def test_query_values_are_read_as_their_declared_types() -> None:
    q = parse_query(
        MultiDict(
            [("limit", "1e1"), ("state", "open"), ("since", "2026-01-02T03:04:05Z"), ("tags", "1"), ("tags", "2")]
        ),
        Query,
    )
    assert q == Query(limit=10, state=State.OPEN, since=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), tags=[1, 2])


def test_route_table_gives_each_path_its_most_specific_template() -> None:
    routes = Routes(prefix="/api/v1/x")

    @routes.delete("/invites/{invite_id}")
    async def revoke(request: Any) -> None: ...

    @routes.post("/invites/accept")
    async def accept(request: Any) -> None: ...

    @routes.get("/invites")
    async def listing(request: Any) -> None: ...

    table = RouteTable(routes.items)
    assert table.allowed("/api/v1/x/invites/accept") == ["OPTIONS", "POST"]
    assert table.allowed("/api/v1/x/invites/abc") == ["DELETE", "OPTIONS"]
    assert table.allowed("/api/v1/x/invites") == ["GET", "OPTIONS"]
    assert table.allowed("/api/v1/x/invites/abc/more") == []
    options = table.check("OPTIONS", "/api/v1/x/invites/accept")
    assert options is not None
    assert options.status == 204
    assert options.headers["Allow"] == "OPTIONS, POST"
    assert table.check("POST", "/api/v1/x/invites/accept") is None
    with pytest.raises(web.HTTPMethodNotAllowed) as info:
        table.check("DELETE", "/api/v1/x/invites/accept")
    assert info.value.headers["Allow"] == "POST"
    # routes without a response model answer (and document) 204
    assert {r.name: r.status for r in routes.items} == {"revoke": 204, "accept": 204, "listing": 204}


def test_unavailable_dependency_follows_the_exception_chain() -> None:
    assert unavailable_dependency(ServerSelectionTimeoutError("x")) == "MongoDB"
    assert unavailable_dependency(AutoReconnect("x")) == "MongoDB"
    assert unavailable_dependency(NetworkTimeout("x")) == "MongoDB"
    assert unavailable_dependency(RedisConnectionError("x")) == "Redis"
    assert unavailable_dependency(RedisTimeoutError("x")) == "Redis"
    assert unavailable_dependency(OperationFailure("x")) is None
    assert unavailable_dependency(ResponseError("x")) is None
    assert unavailable_dependency(ValueError("x")) is None
    outer = RuntimeError("wrapped")
    outer.__cause__ = AutoReconnect("down")
    assert unavailable_dependency(outer) == "MongoDB"


def test_openapi_hoists_query_enums_and_drops_null() -> None:
    routes = Routes(prefix="/api/v1/x")

    class Out(BaseModel):
        n: int

    @routes.get("/things", query=Query, response=Out)
    async def things(request: Any, query: Query) -> Out:
        return Out(n=query.limit)

    @routes.post("/logout")
    async def logout(request: Any) -> None: ...

    doc = build_openapi("t", "1", routes.items)
    params = {p["name"]: p["schema"] for p in doc["paths"]["/api/v1/x/things"]["get"]["parameters"]}
    assert params["state"] == {"$ref": "#/components/schemas/State", "title": "State"} or params["state"]["$ref"] == (
        "#/components/schemas/State"
    )
    assert "State" in doc["components"]["schemas"]
    assert "anyOf" not in params["since"]
    assert params["since"]["format"] == "date-time"
    responses = doc["paths"]["/api/v1/x/logout"]["post"]["responses"]
    assert "204" in responses
    assert "200" not in responses
    assert responses["503"]["headers"]["Retry-After"]["required"] is True


@pytest.mark.parametrize("token", ["", "o" * 40])
def test_operator_routes_exist_only_with_the_operations_token(token: str) -> None:
    from opentelemetry import trace

    from novapulse_runtime.health import Health
    from novapulse_runtime.http import create_app
    from novapulse_runtime.metrics import Metrics
    from novapulse_runtime.settings import ServiceSettings

    routes = Routes(prefix="/api/v1/x")

    @routes.get("/events/streams", operator=True)
    async def streams(request: Any) -> None: ...

    @routes.get("/things")
    async def things(request: Any) -> None: ...

    settings = ServiceSettings(redis_url="redis://x", mongo_url="mongodb://x", operations_token=token)  # type: ignore[arg-type]
    metrics = Metrics("x", "api")
    app = create_app(
        settings=settings, metrics=metrics, health=Health(metrics, 1.0), tracer=trace.get_tracer("t"), routes=routes
    )
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert "/api/v1/x/things" in paths
    assert ("/api/v1/x/events/streams" in paths) is bool(token)


class _Patch(BaseModel):
    url: Annotated[str, Field(pattern=r"^https://")] | SkipJsonSchema[None] = None
    tags: list[Annotated[str, Field(max_length=3)] | int] = []
    headers: dict[str, Annotated[str, Field(max_length=2)]] = {}


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"url": "ftp://x"}, ["url"]),  # not url.constrained-str and url.none
        ({"tags": ["ok", "toolong"]}, ["tags.1"]),
        ({"headers": {"x-long": "abc"}}, ["headers.x-long"]),  # a free-form key is kept
    ],
)
def test_error_fields_are_the_clients_paths_without_union_tags(body: dict[str, object], fields: list[str]) -> None:
    with pytest.raises(ProblemError) as err:
        parse_body(json.dumps(body).encode(), _Patch)
    errors = err.value.extra["errors"]
    assert [e["field"] for e in errors] == fields
    assert all(e["type"] != "none_required" for e in errors)
