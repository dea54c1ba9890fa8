"""The workflow service as real processes (api + worker) over real Redis and the MongoDB-wire server: a user
registering runs a definition end to end; the same event again starts no second run; kill -9 of the worker
during a delay loses nothing and repeats no effect; cancel; rerun from a middle step; bad definitions are
422s naming each fault's path; members read, managers change."""

from __future__ import annotations

import copy
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from helpers_workflow import WELCOME, producer, stream_events

from novapulse_devkit.testing import ServiceProcess, TokenIssuer, start_together, wait_until
from novapulse_runtime.catalog.auth import UserRegistered

pytestmark = pytest.mark.e2e

PREFIX = "/api/v1/workflows"
FAST = {"RUN_LEASE_SECONDS": "1", "POLL_INTERVAL_SECONDS": "0.05"}


def registered(org: str, user: str, email: str = "ada@example.com") -> UserRegistered:
    return UserRegistered(user_id=user, org_id=org, email=email, name="Ada", role="owner", organization="Acme")


class Client:
    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http = http
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
        async with self.http.request(
            method, self.base + path, json=body, headers=self.headers, params=params or None
        ) as r:
            return r.status, (await r.json() if r.content_type.endswith("json") else None)


def env_of(token_issuer: TokenIssuer, names: str) -> dict[str, str]:
    return token_issuer.env() | {"EVENTS_NAMESPACE": names} | FAST


async def run_of(client: Client, status: str | None = None) -> dict[str, Any] | None:
    _, page = await client.call("GET", "/runs")
    items = [r for r in page["items"] if status is None or r["status"] == status]
    return items[0] if items else None


async def test_a_registration_runs_a_definition_end_to_end(
    spawn: Callable[..., ServiceProcess], token_issuer: TokenIssuer, names: str, redis_url: str, mongo_url: str
) -> None:
    env = env_of(token_issuer, names)
    api = spawn("novapulse_workflow", "api", env=env, start=False)
    worker = spawn("novapulse_workflow", "worker", env=env, start=False)
    start_together([api, worker])
    org = f"org-{names}"
    async with aiohttp.ClientSession() as http:
        owner = Client(http, api.url + PREFIX, token_issuer.mint("u1", org, "owner"))
        member = Client(http, api.url + PREFIX, token_issuer.mint("u2", org, "member"))
        status, _ = await member.call("POST", "/definitions", WELCOME)
        assert status == 403
        status, created = await owner.call("POST", "/definitions", WELCOME)
        assert status == 201, created
        def_id = created["id"]
        assert created["version"] == 1
        status, dry = await member.call(
            "POST", f"/definitions/{def_id}/dry-run", {"data": registered(org, "u9").model_dump()}
        )
        assert status == 200
        assert [s["key"] for s in dry["path"]] == ["hello", "pause", "branch", "tell"]
        assert dry["path"][0]["inputs"]["user_id"] == "u9"
        assert dry["path"][3]["inputs"]["data"] == {"user": "u9", "note": "welcomed Ada"}
        async with producer("auth", redis_url, mongo_url, names) as auth:
            event = auth.event("user.registered", registered(org, "u7"), org_id=org)
            await auth.publish_events([event])

            async def completed() -> bool:
                return await run_of(owner, "completed") is not None

            await wait_until(completed, timeout=30, message=f"run completed; worker log:\n{worker.logs()[-3000:]}")
            await auth.publish_events([event])  # the same event redelivered starts no second run
            await wait_until(
                lambda: _has(redis_url, names, "workflow.run.completed", 1), timeout=10, message="completed relayed"
            )
        run = await run_of(owner)
        assert run is not None
        assert run["trigger_event_id"] == event.id
        status, detail = await member.call("GET", f"/runs/{run['id']}")
        assert status == 200
        assert [(s["key"], s["status"]) for s in detail["timeline"]] == [
            ("hello", "completed"),
            ("pause", "completed"),
            ("branch", "completed"),
            ("tell", "completed"),
        ]
        assert detail["timeline"][3]["output"]["data"] == {"user": "u7", "note": "welcomed Ada"}
        assert detail["timeline"][1]["output"]["fired_ms"] >= detail["timeline"][1]["output"]["due_ms"]
        await wait_until(lambda: _has(redis_url, names, "workflow.emitted", 1), timeout=10, message="emitted relayed")
        events = set(await stream_events(redis_url, names))
        assert Counter(t for _, t in events) == {
            "workflow.run.started": 1,
            "notification.requested": 1,
            "workflow.emitted": 1,
            "workflow.run.completed": 1,
        }
        status, listed = await owner.call("GET", "/runs", definition_id=def_id, status="completed", limit="1")
        assert status == 200
        assert len(listed["items"]) == 1
        assert listed["next_cursor"] is None
        status, _ = await owner.call("GET", "/runs", trigger_event_id="nothing")
        assert status == 200
        async with http.get(worker.url + "/api/v1/metrics") as r:
            metrics = await r.text()
        assert 'novapulse_workflow_runs_total{event="completed"} 1.0' in metrics
        assert "novapulse_workflow_schedule_lag_seconds_count" in metrics
        stranger = Client(http, api.url + PREFIX, token_issuer.mint("u3", "other-org", "owner"))
        assert (await stranger.call("GET", f"/runs/{run['id']}"))[0] == 404
        assert (await stranger.call("GET", f"/definitions/{def_id}"))[0] == 404


async def _has(redis_url: str, names: str, type_: str, count: int) -> bool:
    """``count`` distinct events of ``type_`` on the workflow stream (the relay is at least once: an entry may
    repeat under the same id, which every consumer drops)."""
    return len({i for i, t in await stream_events(redis_url, names) if t == type_}) == count


async def test_bad_definitions_are_422s_naming_each_fault(
    spawn: Callable[..., ServiceProcess], token_issuer: TokenIssuer, names: str
) -> None:
    api = spawn("novapulse_workflow", "api", env=env_of(token_issuer, names))
    async with aiohttp.ClientSession() as http:
        owner = Client(http, api.url + PREFIX, token_issuer.mint("u1", "o1", "owner"))
        bad = copy.deepcopy(WELCOME)
        bad["trigger"]["type"] = "user.no_such"  # under a platform domain: not an application type
        bad["steps"][1]["next"] = "nowhere"
        bad["steps"][2]["branches"][0]["when"] = "a ||"
        status, problem = await owner.call("POST", "/definitions", bad)
        assert status == 422
        assert problem["title"] == "Invalid definition"
        assert {e["field"]: e["type"] for e in problem["errors"]} == {
            "trigger.type": "unknown_event_type",
            "steps.1.next": "unknown_step",
            "steps.2.branches.0.when": "expression",
        }
        structural = copy.deepcopy(WELCOME)
        structural["steps"][0]["key"] = "Bad Key"
        status, problem = await owner.call("POST", "/definitions", structural)
        assert status == 422
        assert "steps.0.key" in {e["field"] for e in problem["errors"]}


async def test_kill9_during_a_delay_then_cancel_and_rerun(
    spawn: Callable[..., ServiceProcess], token_issuer: TokenIssuer, names: str, redis_url: str
) -> None:
    env = env_of(token_issuer, names)
    api = spawn("novapulse_workflow", "api", env=env, start=False)
    first = spawn("novapulse_workflow", "worker", env=env, start=False)
    start_together([api, first])
    body = copy.deepcopy(WELCOME)
    body["trigger"] = {"type": "manual"}
    body["steps"][1]["seconds"] = 2
    body["steps"][2]["branches"][0]["when"] = "trigger.data.big"
    async with aiohttp.ClientSession() as http:
        owner = Client(http, api.url + PREFIX, token_issuer.mint("u1", "o1", "owner"))
        _, created = await owner.call("POST", "/definitions", body)
        def_id = created["id"]
        status, run = await owner.call(
            "POST", f"/definitions/{def_id}/trigger", {"data": {"user_id": "u5", "big": True}}
        )
        assert status == 202, run

        async def status_is(run_id: str, wanted: str) -> bool:
            _, got = await owner.call("GET", f"/runs/{run_id}")
            return bool(got["status"] == wanted)

        await wait_until(lambda: status_is(run["id"], "waiting"), timeout=20, message="run in its delay")
        first.signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        spawn("novapulse_workflow", "worker", env=env)
        await wait_until(lambda: status_is(run["id"], "completed"), timeout=30, message="run completed after kill")
        await wait_until(lambda: _has(redis_url, names, "workflow.run.completed", 1), timeout=10, message="relayed")
        # each effect went out under one id, the one the journal holds (copies under the same id, which the
        # at-least-once relay may make, are dropped by every consumer)
        events = set(await stream_events(redis_url, names))
        kinds = Counter(t for _, t in events)
        assert kinds["notification.requested"] == 1
        assert kinds["workflow.emitted"] == 1
        _, timeline = await owner.call("GET", f"/runs/{run['id']}")
        journaled = {s["effect_id"] for s in timeline["timeline"] if s["effect_id"]}
        assert journaled == {i for i, t in events if t in ("notification.requested", "workflow.emitted")}

        # cancel: a run in a long delay
        body["steps"][1]["seconds"] = 600
        status, updated = await owner.call("PUT", f"/definitions/{def_id}", body)
        assert status == 200
        assert updated["version"] == 2
        _, long_run = await owner.call("POST", f"/definitions/{def_id}/trigger", {"data": {"user_id": "u6"}})
        assert long_run["version"] == 2
        await wait_until(lambda: status_is(long_run["id"], "waiting"), timeout=20, message="long run waiting")
        status, cancelled = await owner.call("POST", f"/runs/{long_run['id']}/cancel")
        assert status == 200
        assert cancelled["status"] == "cancelled"
        assert (await owner.call("POST", f"/runs/{long_run['id']}/cancel"))[0] == 409
        await wait_until(lambda: _has(redis_url, names, "workflow.run.failed", 1), timeout=10, message="cancel relayed")

        # rerun the first run from its middle step, on the pinned version: the notify output is reused
        status, rerun = await owner.call("POST", f"/runs/{run['id']}/rerun", {"from_step": "branch"})
        assert status == 201, rerun
        assert rerun["version"] == 1
        assert rerun["reused_steps"] == ["hello", "pause"]
        assert rerun["changed_steps"] == []
        await wait_until(lambda: status_is(rerun["run"]["id"], "completed"), timeout=20, message="rerun completed")
        _, detail = await owner.call("GET", f"/runs/{rerun['run']['id']}")
        assert [(s["key"], s["status"]) for s in detail["timeline"]] == [
            ("hello", "reused"),
            ("pause", "reused"),
            ("branch", "completed"),
            ("tell", "completed"),
        ]
        assert detail["rerun_of"] == run["id"]
        status, latest = await owner.call(
            "POST", f"/runs/{run['id']}/rerun", {"from_step": "tell", "version": "latest"}
        )
        assert status == 201
        assert latest["version"] == 2
        assert latest["changed_steps"] == ["pause"]
        assert (await owner.call("POST", f"/runs/{run['id']}/rerun", {"from_step": "nope"}))[0] == 422
