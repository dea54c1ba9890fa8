"""Fixtures of the webhook, event-bus, workflow and report pages' tests: ``pages_stack``, one stack of real
processes per module (auth, webhook, workflow and report APIs and workers, the console) on the session's
Redis and MongoDB-wire servers, and ``email``, a fresh address. The tests themselves are async scenarios
wrapped by ``helpers_pages.own_loop`` (their own event loop in their own thread, whatever Playwright's sync
API holds in the main thread), driving the pages with ``helpers_pages.Browser``, an HTTP client with a
cookie jar that fills forms the way a browser does (the CSRF token taken from the page's form)."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from novapulse_devkit.servers import free_port
from novapulse_devkit.stack import DEV_ENV
from novapulse_devkit.testing import Servers, ServiceProcess, start_together, stop_together

sys.path.insert(0, str(Path(__file__).parent))

from helpers_pages import OPERATIONS_TOKEN, OPERATOR


@dataclass
class PagesStack:
    """The processes of one module's stack, by ``<package>-<role>``."""

    procs: dict[str, ServiceProcess]
    names: str
    redis_url: str

    def url(self, key: str) -> str:
        return self.procs[key].url

    @property
    def console(self) -> str:
        return self.url("console-api")

    def logs(self) -> str:
        return "\n".join(f"--- {k} ---\n{p.logs()[-4000:]}" for k, p in self.procs.items())


@pytest.fixture(scope="module")
def pages_stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PagesStack]:
    """auth, webhook, workflow and report (api + worker each) and the console's api, as real processes."""
    names = "pg" + uuid.uuid4().hex[:10]
    logs = tmp_path_factory.mktemp("pages")
    ports = {k: free_port() for k in ("auth", "webhook", "workflow", "report", "console")}
    jwks = f"http://127.0.0.1:{ports['auth']}/api/v1/auth/.well-known/jwks.json"
    common = {
        "REDIS_URL": servers.redis_url,
        "MONGO_URL": servers.mongo_url,
        "HTTP_HOST": "127.0.0.1",
        "EVENTS_NAMESPACE": names,
        "OPERATIONS_TOKEN": OPERATIONS_TOKEN,
        "RATE_LIMIT_ENABLED": "false",
        "AUTH_JWKS_URL": jwks,
        "SHUTDOWN_TIMEOUT": "5",
        "PYTHONUNBUFFERED": "1",
    }
    per_service: dict[str, dict[str, str]] = {
        "auth": {"AUTH_ENCRYPTION_KEYS": Fernet.generate_key().decode(), "REGISTRATION_EMAIL_VERIFICATION": "false"},
        "webhook": {
            **DEV_ENV["webhook"],
            "WEBHOOK_RETRY_SCHEDULE": "0",
            "WEBHOOK_TIMEOUT": "3",
            "WEBHOOK_POLL_INTERVAL": "0.05",
        },
        "workflow": {},
        "report": {**DEV_ENV["report"]},
        "console": {
            **DEV_ENV["console"],
            "CONSOLE_OPERATOR_EMAILS": OPERATOR,
            "AUTH_API_URL": f"http://127.0.0.1:{ports['auth']}",
            "WEBHOOK_API_URL": f"http://127.0.0.1:{ports['webhook']}",
            "WORKFLOW_API_URL": f"http://127.0.0.1:{ports['workflow']}",
            "REPORT_API_URL": f"http://127.0.0.1:{ports['report']}",
            "NOTIFICATION_API_URL": "",
        },
    }
    procs: dict[str, ServiceProcess] = {}
    try:
        for service in ("auth", "webhook", "workflow", "report", "console"):
            roles = ("api",) if service == "console" else ("api", "worker")
            for role in roles:
                port = ports[service] if role == "api" else free_port()
                env = {
                    **os.environ,
                    **common,
                    **per_service[service],
                    "MONGO_DB": f"{names}_{service}",
                    "HTTP_PORT": str(port),
                    "WORKER_HTTP_PORT": str(port),
                }
                key = f"{service}-{role}"
                procs[key] = ServiceProcess(f"novapulse_{service}", role, env, port, logs / f"{key}.log")
        start_together(procs.values(), timeout=60)  # none needs another to start (auth's JWKS is read lazily)
        yield PagesStack(procs, names, servers.redis_url)
    finally:
        stop_together(procs.values())


@pytest.fixture
def email() -> str:
    """A fresh address (its own organisation when registered)."""
    return f"owner-{uuid.uuid4().hex[:8]}@example.com"
