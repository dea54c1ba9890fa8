"""Each service's API as a real process with a real access token, for the contract tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.fernet import Fernet
from pymongo import AsyncMongoClient

from novapulse_devkit.testing import ServiceProcess, TokenIssuer
from novapulse_runtime import jsonstrict

PREFIXES = {
    "auth": "/api/v1/auth",
    "webhook": "/api/v1/webhooks",
    "notification": "/api/v1/notifications",
    "workflow": "/api/v1/workflows",
    "report": "/api/v1/reports",
}
PASSWORD = "correct horse battery staple 42"
OPERATIONS_TOKEN = "contract-operations-token-0123456789abcdef"


@dataclass
class LiveApi:
    service: str
    process: ServiceProcess
    token: str

    @property
    def openapi_url(self) -> str:
        return f"{self.process.url}{PREFIXES[self.service]}/openapi.json"


async def start_api(
    service: str, spawn: Callable[..., ServiceProcess], token_issuer: TokenIssuer, names: str
) -> LiveApi:
    """Start ``novapulse_<service> api`` with the rate limiter off (fuzzing would only meet 429s) and an
    owner's access token: auth registers a user through its own API and logs in (it trusts its own JWKS);
    webhook and notification trust the plugin's token issuer."""
    env: dict[str, Any] = {
        "RATE_LIMIT_ENABLED": "false",
        "EVENTS_NAMESPACE": names,
        "LOG_LEVEL": "WARNING",
        "OPERATIONS_TOKEN": OPERATIONS_TOKEN,
    }
    if service == "auth":
        env["AUTH_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
        api = spawn("novapulse_auth", "api", env=env, start=False)
        api.env["AUTH_JWKS_URL"] = f"{api.url}{PREFIXES['auth']}/.well-known/jwks.json"
        api.start()
        async with aiohttp.ClientSession(api.url) as http:
            email = f"contract-{names}@example.com"
            body = {"email": email, "password": PASSWORD, "name": "Contract", "organization": "Contract"}
            async with http.post(f"{PREFIXES['auth']}/register", json=body) as resp:
                assert resp.status == 202, await resp.text()
            # registration completes by the mailed link: its token, from the outbox in the process's database
            # (no worker relays it here)
            mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(api.env["MONGO_URL"])
            try:
                outbox = mongo[api.env["MONGO_DB"]]["outbox"]
                [record] = await outbox.find({"type": "registration.verification_requested"}).to_list(10)
            finally:
                await mongo.close()
            verify = {"token": jsonstrict.loads(record["fields"]["data"])["token"], "password": PASSWORD}
            async with http.post(f"{PREFIXES['auth']}/register/verify", json=verify) as resp:
                assert resp.status == 201, await resp.text()
            async with http.post(f"{PREFIXES['auth']}/login", json={"email": email, "password": PASSWORD}) as resp:
                assert resp.status == 200, await resp.text()
                token = str((await resp.json())["access_token"])
        return LiveApi(service, api, token)
    env.update(token_issuer.env())
    if service == "webhook":
        env.update(
            {
                "WEBHOOK_SECRET_KEYS": Fernet.generate_key().decode(),
                # the address policy is deployment configuration, not schema: open it so that a schema-valid
                # URL is judged on its syntax (the policy itself is tested in services/webhook/tests)
                "WEBHOOK_ALLOWED_CIDRS": "0.0.0.0/0,::/0",
                "WEBHOOK_ALLOW_HTTP": "true",
            }
        )
    if service == "report":
        env["REPORT_DOWNLOAD_SECRET"] = "contract-report-link-secret-0123456789abcdef"
    api = spawn(f"novapulse_{service}", "api", env=env)
    return LiveApi(service, api, token_issuer.mint("u-contract", f"org-{names}", "owner"))
