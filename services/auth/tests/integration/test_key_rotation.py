"""Rotating AUTH_ENCRYPTION_KEYS: a new key first, the worker's re-encryption, then the old key dropped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.fernet import Fernet
from helpers_auth import TEST_KEY, AuthApp, code_at

from novapulse_auth.reencrypt import reencrypt


async def test_secrets_survive_an_encryption_key_rotation(make_app: Callable[..., Any], names: str) -> None:
    old: AuthApp = await make_app(mongo_db=f"{names}rot")
    owner = await old.register()
    await old.enable_mfa(owner)
    new_key = Fernet.generate_key().decode()

    both: AuthApp = await make_app(mongo_db=f"{names}rot", auth_encryption_keys=f"{new_key},{TEST_KEY}")
    changed = await reencrypt(both.services.repo, both.services.box, both.services.enc_key_id)
    assert changed == 2  # the user's TOTP secret and the signing key
    assert await reencrypt(both.services.repo, both.services.box, both.services.enc_key_id) == 0

    only_new: AuthApp = await make_app(mongo_db=f"{names}rot", auth_encryption_keys=new_key)
    token = (await only_new.login(owner))["mfa_token"]
    resp = await only_new.post("/mfa/verify", {"mfa_token": token, "code": code_at(owner.totp_secret, 1)})
    assert resp.status == 200, await resp.text()  # TOTP secret decrypts, and the signing key signs
    tokens = await resp.json()
    resp = await only_new.get("/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert resp.status == 200


async def test_the_worker_rotates_an_old_signing_key(app: AuthApp) -> None:
    import asyncio

    from novapulse_auth.worker import rotation_worker
    from novapulse_devkit.testing import wait_until

    owner = await app.register()
    stop = asyncio.Event()
    s = app.services
    task = asyncio.create_task(rotation_worker(s.keys, s.repo, s.box, s.enc_key_id, interval=1, check_every=0.2)(stop))
    try:

        async def rotated() -> bool:
            jwks = await (await app.get("/.well-known/jwks.json")).json()
            return len(jwks["keys"]) == 2

        await wait_until(rotated, timeout=15, message="a second signing key")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert (await app.get("/me", headers=owner.auth)).status == 200  # signed by the now-previous key
