"""Across services, all real processes: a user registering runs a workflow that notifies (the notification
service writes the mail to its catcher), delays 2 s, branches and emits an event the webhook service
delivers to a real HTTP receiver subscribed to the emitted type (``customer.onboarded``)."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from cryptography.fernet import Fernet
from helpers_workflow import WELCOME, Hooks, producer

from novapulse_devkit.servers import free_port
from novapulse_devkit.testing import ServiceProcess, TokenIssuer, start_together, wait_until
from novapulse_runtime.catalog.auth import UserRegistered

pytestmark = pytest.mark.e2e


def subjects(mail_dir: Path) -> list[str]:
    return [
        str(email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["Subject"])
        for p in sorted(mail_dir.glob("*.eml"))
    ]


async def test_registration_to_mail_and_webhook(
    spawn: Callable[..., ServiceProcess],
    token_issuer: TokenIssuer,
    names: str,
    redis_url: str,
    mongo_url: str,
    tmp_path: Path,
) -> None:
    common = token_issuer.env() | {"EVENTS_NAMESPACE": names, "RATE_LIMIT_ENABLED": "false"}
    mail_dir = tmp_path / "mail"
    note_worker = spawn(
        "novapulse_notification",
        "worker",
        env=common | {"MAIL_CATCHER_DIR": str(mail_dir), "MAIL_CATCHER_PORT": str(free_port())},
        start=False,
    )
    hook_env = common | {
        "WEBHOOK_SECRET_KEYS": Fernet.generate_key().decode(),
        "WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_POLL_INTERVAL": "0.05",
    }
    webhook_api = spawn("novapulse_webhook", "api", env=hook_env, start=False)
    webhook_worker = spawn("novapulse_webhook", "worker", env=hook_env, start=False)
    flow_env = common | {"RUN_LEASE_SECONDS": "2", "POLL_INTERVAL_SECONDS": "0.05"}
    workflow_api = spawn("novapulse_workflow", "api", env=flow_env, start=False)
    workflow_worker = spawn("novapulse_workflow", "worker", env=flow_env, start=False)
    start_together([note_worker, webhook_api, webhook_worker, workflow_api, workflow_worker])
    org = f"org-{names}"
    body = {**WELCOME, "steps": [dict(s) for s in WELCOME["steps"]]}
    body["steps"][0]["data"] = {"subject": "Hello from the workflow", "message": "Welcome, ${trigger.data.name}"}
    body["steps"][1]["seconds"] = 2
    headers = {"Authorization": f"Bearer {token_issuer.mint('u1', org, 'owner')}"}
    async with aiohttp.ClientSession(headers=headers) as http, Hooks() as hooks:
        async with http.post(
            webhook_api.url + "/api/v1/webhooks/endpoints",
            json={"url": hooks.url, "event_types": ["customer.onboarded"]},
        ) as r:
            assert r.status == 201, await r.text()
        async with http.post(workflow_api.url + "/api/v1/workflows/definitions", json=body) as r:
            assert r.status == 201, await r.text()
        async with producer("auth", redis_url, mongo_url, names) as auth:
            await auth.publish(
                "user.registered",
                UserRegistered(
                    user_id="u1", org_id=org, email="ada@example.com", name="Ada", role="owner", organization="A"
                ),
                org_id=org,
            )
        await wait_until(
            lambda: any(b.get("type") == "customer.onboarded" for b in hooks.bodies),
            timeout=60,
            interval=0.1,
            message=f"the emitted event at the receiver; workflow worker log:\n{workflow_worker.logs()[-3000:]}",
        )
        [emitted] = [b for b in hooks.bodies if b.get("type") == "customer.onboarded"]
        assert emitted["data"] == {"user": "u1", "note": "welcomed Ada"}  # the organisation's own event
        await wait_until(
            lambda: "Hello from the workflow" in subjects(mail_dir),
            timeout=30,
            interval=0.1,
            message="the workflow's mail in the catcher",
        )
        assert subjects(mail_dir).count("Hello from the workflow") == 1
        async with http.get(workflow_api.url + "/api/v1/workflows/runs") as r:
            [run] = (await r.json())["items"]
        assert run["status"] == "completed"
