"""Operations routes open only to OPERATIONS_TOKEN: 404 while unset, 401 for anything else (tenant tokens
included), and are marked as such in the OpenAPI document."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.trace import NoOpTracer
from pydantic import BaseModel

from novapulse_runtime.health import Health
from novapulse_runtime.http import create_app
from novapulse_runtime.metrics import Metrics
from novapulse_runtime.routes import Routes
from novapulse_runtime.settings import ServiceSettings

pytestmark = pytest.mark.unit

TOKEN = "o" * 40


class Out(BaseModel):
    ok: bool


def _app(token: str) -> web.Application:
    settings = ServiceSettings(redis_url="redis://x", mongo_url="mongodb://x", operations_token=token)  # type: ignore[arg-type]
    metrics = Metrics("t", "api")
    routes = Routes(prefix="/api/v1/t")

    @routes.get("/ops", response=Out, operator=True)
    async def ops(request: web.Request) -> Out:
        """Operator only."""
        return Out(ok=True)

    return create_app(
        settings=settings, metrics=metrics, health=Health(metrics, 1.0), tracer=NoOpTracer(), routes=routes
    )


async def test_unset_token_hides_routes() -> None:
    async with TestClient(TestServer(_app(""))) as client:
        resp = await client.get("/api/v1/t/ops", headers={"Authorization": "Bearer " + TOKEN})
        assert resp.status == 404
        assert resp.content_type == "application/problem+json"


async def test_only_the_operations_token_opens() -> None:
    async with TestClient(TestServer(_app(TOKEN))) as client:
        for headers in (
            {},
            {"Authorization": "Bearer " + TOKEN[:-1]},
            {"Authorization": "Basic " + TOKEN},
            {"Authorization": "Bearer eyJhbGciOiJFZERTQSJ9.e30.sig"},
        ):
            resp = await client.get("/api/v1/t/ops", headers=headers)
            assert resp.status == 401
        resp = await client.get("/api/v1/t/ops", headers={"Authorization": "Bearer " + TOKEN})
        assert resp.status == 200
        doc = await (await client.get("/api/v1/t/openapi.json")).json()
        assert doc["paths"]["/api/v1/t/ops"]["get"]["security"] == [{"operations": []}]


def test_short_token_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="32 characters"):
        ServiceSettings(redis_url="redis://x", mongo_url="mongodb://x", operations_token="short")  # type: ignore[arg-type]
