"""Application event types as triggers, over the real api and worker processes: a definition names the
organisation's own type (``invoice.paid``), ``POST /events`` starts its runs (filter applied, idempotent by
``Idempotency-Key`` or event id), and bad input is a 4xx problem."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from helpers_workflow import stream_events

from novapulse_devkit.testing import ServiceProcess, TokenIssuer, start_together, wait_until

pytestmark = pytest.mark.e2e

PREFIX = "/api/v1/workflows"

PAID: dict[str, Any] = {
    "name": "Big invoice paid",
    "trigger": {"type": "invoice.paid", "filter": "event.data.amount > `100`"},
    "steps": [
        {
            "key": "tell",
            "type": "emit",
            "event_type": "customer.thanked",
            "data": {"invoice": "${trigger.data.invoice}", "by": "${trigger.source}"},
        }
    ],
}


async def test_posted_application_events_trigger_definitions(
    spawn: Callable[..., ServiceProcess], token_issuer: TokenIssuer, names: str, redis_url: str
) -> None:
    env = token_issuer.env() | {"EVENTS_NAMESPACE": names, "RUN_LEASE_SECONDS": "1", "POLL_INTERVAL_SECONDS": "0.05"}
    api = spawn("novapulse_workflow", "api", env=env, start=False)
    worker = spawn("novapulse_workflow", "worker", env=env, start=False)
    start_together([api, worker])
    org = f"org-{names}"
    owner = {"Authorization": f"Bearer {token_issuer.mint('u1', org, 'owner')}"}
    member = {"Authorization": f"Bearer {token_issuer.mint('u2', org, 'member')}"}

    async def call(method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, str, Any]:
        async with http.request(method, api.url + PREFIX + path, json=body, headers=headers) as r:
            return r.status, r.content_type, await r.json() if r.content_type.endswith("json") else None

    async with aiohttp.ClientSession() as http:
        # a typo of a platform type is not taken for an application type
        status, ctype, problem = await call(
            "POST", "/definitions", {**PAID, "trigger": {"type": "user.registerd"}}, owner
        )
        assert (status, ctype) == (422, "application/problem+json")
        assert [(e["field"], e["type"]) for e in problem["errors"]] == [("trigger.type", "unknown_event_type")]
        status, _, created = await call("POST", "/definitions", PAID, owner)
        assert status == 201, created
        assert created["trigger_type"] == "invoice.paid"

        event = {"type": "invoice.paid", "data": {"invoice": "in_1", "amount": 250}}
        status, _, _ = await call("POST", "/events", event, member)
        assert status == 403  # members read, managers change
        keyed = owner | {"Idempotency-Key": "pay-in_1"}
        status, _, first = await call("POST", "/events", event, keyed)
        assert status == 202, first
        assert len(first["runs"]) == 1
        assert first["duplicate"] is False
        status, _, again = await call("POST", "/events", event, keyed)  # a retried request
        assert status == 202
        assert again == {**first, "duplicate": True}
        status, ctype, problem = await call("POST", "/events", {**event, "data": {"amount": 1}}, keyed)
        assert (status, ctype, problem["title"]) == (409, "application/problem+json", "Event id reused")
        # the caller's own event id works the same way; the filter decides
        small = {"type": "invoice.paid", "id": "evt-small-1", "data": {"invoice": "in_2", "amount": 5}}
        status, _, filtered = await call("POST", "/events", small, owner)
        assert (status, filtered["event_id"], filtered["runs"]) == (202, "evt-small-1", [])
        # an event nobody's definition names starts nothing, and is no fault
        status, _, none = await call("POST", "/events", {"type": "shipment.sent", "data": {}}, owner)
        assert (status, none["runs"]) == (202, [])

        # bad input: platform types, types under a platform domain, bad shapes, oversized data
        for bad, field in [
            ({"type": "user.registered", "data": {}}, "type"),
            ({"type": "report.whatever", "data": {}}, "type"),
            ({"type": "Invoice Paid", "data": {}}, "type"),
            ({"type": "invoice.paid", "data": []}, "data"),
            ({"type": "invoice.paid", "data": {}, "extra": 1}, ""),  # an unknown field: named at the body
            ({"type": "invoice.paid", "data": {}, "id": "has space"}, "id"),
        ]:
            status, ctype, problem = await call("POST", "/events", bad, owner)
            assert (status, ctype) == (422, "application/problem+json"), (bad, problem)
            assert field in [e["field"] for e in problem["errors"]], (bad, problem)
        status, ctype, _ = await call(
            "POST", "/events", {"type": "invoice.paid", "data": {"blob": "x" * 70_000}}, owner
        )
        assert (status, ctype) == (413, "application/problem+json")
        status, _, _ = await call("POST", "/events", event, owner | {"Idempotency-Key": "k" * 257})
        assert status == 422

        [run_id] = first["runs"]

        async def completed() -> bool:
            _, _, run = await call("GET", f"/runs/{run_id}", None, owner)
            return bool(run["status"] == "completed")

        await wait_until(completed, timeout=30, message="the run of the posted event completed")
        _, _, run = await call("GET", f"/runs/{run_id}", None, owner)
        assert run["trigger"]["source"] == "app"
        assert run["timeline"][0]["output"]["data"] == {"invoice": "in_1", "by": "app"}
        emitted = [e for e in await stream_events(redis_url, names) if e[1] == "workflow.emitted"]
        assert len(emitted) == 1  # one run for the event and its retried request
