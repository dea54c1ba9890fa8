"""Property-based fuzzing of every route from ``/api/v1/auth/openapi.json`` (schemathesis): no input, valid or
not, authenticated or not, gets a 5xx."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers_auth import GOOD_PASSWORD, TEST_KEY
from pymongo import AsyncMongoClient

P = "/api/v1/auth"
LIMITS = {
    name: "100000"
    for name in (
        "LOGIN_IP_LIMIT",
        "LOGIN_ACCOUNT_LIMIT",
        "REGISTER_IP_LIMIT",
        "INVITE_ORG_LIMIT",
        "MFA_VERIFY_USER_LIMIT",
        "MFA_VERIFY_IP_LIMIT",
        "REFRESH_IP_LIMIT",
        "REGISTER_EMAIL_LIMIT",
        "INVITE_RECIPIENT_LIMIT",
        "LOGIN_ACCOUNT_CEILING",
    )
}


@pytest.mark.timeout(300)
async def test_no_input_gets_a_5xx(spawn: Callable[..., Any], names: str, tmp_path: Path) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.skip("schemathesis is not installed (dependency group 'fuzz' of novapulse-auth)")
    api = spawn("novapulse_auth", "api", env={"AUTH_ENCRYPTION_KEYS": TEST_KEY, **LIMITS}, start=False)
    api.env["AUTH_JWKS_URL"] = f"{api.url}{P}/.well-known/jwks.json"
    api.start()
    async with aiohttp.ClientSession(api.url) as http:
        body = {"email": f"fuzz-{names}@example.com", "password": GOOD_PASSWORD, "name": "F", "organization": "F"}
        async with http.post(f"{P}/register", json=body) as resp:
            assert resp.status == 202
        # the verification link's token, from the outbox in the process's database (no worker relays it here)
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(api.env["MONGO_URL"])
        outbox = mongo[api.env["MONGO_DB"]]["outbox"]
        [record] = await outbox.find({"type": "registration.verification_requested"}).to_list(10)
        await mongo.close()
        verify_token = json.loads(record["fields"]["data"])["token"]
        async with http.post(f"{P}/register/verify", json={"token": verify_token}) as resp:
            assert resp.status == 201
        async with http.post(f"{P}/login", json={"email": body["email"], "password": GOOD_PASSWORD}) as resp:
            token = (await resp.json())["access_token"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hyp")}
    proc = subprocess.run(
        [
            cli,
            "run",
            f"{api.url}{P}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--header",
            f"Authorization: Bearer {token}",
            # /logout revokes the session of the shared bearer token everywhere: every later case would only
            # see 401. It has no input to fuzz; its behaviour is tested in integration/test_revocation.py.
            "--exclude-path",
            f"{P}/logout",
            "--seed",
            "1",
            "--request-timeout",
            "20",
            "--generation-database",
            ":memory:",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=280,
        check=False,
    )
    print(proc.stdout[-2500:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:] + api.logs()[-3000:]
    assert " 500 " not in api.logs()
