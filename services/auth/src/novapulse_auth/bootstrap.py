"""Composition root of the auth service: builds repositories, keys, services and routes for one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

from novapulse_runtime.revocation import default_namespace
from novapulse_runtime.routes import Routes
from novapulse_runtime.runtime import Runtime, Worker
from novapulse_runtime.secretbox import SecretBox

from .accounts import AccountService
from .api import build_routes
from .events import Outbox
from .invites import InviteService
from .lockout import LoginGuard
from .mfa import MfaService
from .passwords import PasswordHashing
from .reencrypt import key_id, reencrypt
from .registration import RegistrationService
from .repository import Repository
from .sessions import SessionService, sync_revocations
from .settings import AuthSettings
from .signing import KeyRing

log = logging.getLogger(__name__)


def rotation_worker(services: Services, interval: int, check_every: float | None = None) -> Worker:
    """Rotates the signing key once it is older than ``KEY_ROTATION_INTERVAL``, and re-encrypts secrets still
    under an older ``AUTH_ENCRYPTION_KEYS`` key."""
    keys = services.keys
    pause = check_every if check_every is not None else max(5.0, min(interval / 4, 300.0))

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await keys.load()
                if keys.rotation_due(interval):
                    await keys.rotate()
                    log.info("signing key rotated")
                await reencrypt(services.repo, services.box, services.enc_key_id)
            except Exception as exc:  # a database outage must not kill the worker; retry next round
                log.warning("key rotation check failed", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    return run


def revocation_sync_worker(services: Services, interval: float) -> Worker:
    """Every ``REVOCATION_SYNC_INTERVAL`` seconds, rewrites into Redis the session revocations of the last
    access-token lifetime that Redis lost (MongoDB is the truth), so verifiers honour them again."""

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                restored = await sync_revocations(services.repo, services.sessions)
                if restored:
                    log.warning("session revocations restored into Redis", extra={"count": restored})
            except Exception as exc:  # an outage must not kill the worker; retry next round
                log.warning("revocation sync failed", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    return run


@dataclass
class Services:
    """Everything one process of the auth service is made of (tests reach the parts through this)."""

    repo: Repository
    box: SecretBox
    enc_key_id: str
    keys: KeyRing
    outbox: Outbox
    passwords: PasswordHashing
    sessions: SessionService
    mfa: MfaService
    accounts: AccountService
    invites: InviteService
    registration: RegistrationService


async def wire(rt: Runtime) -> Services:
    """Create indexes, load (or create) the signing keys and build the services."""
    settings = cast(AuthSettings, rt.settings)
    repo = Repository(rt.db)
    await repo.create_indexes()
    box = SecretBox(settings.auth_encryption_keys)
    enc_key_id = key_id(settings.auth_encryption_keys[0])
    keys = KeyRing(
        repo.signing_keys,
        box,
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
        access_ttl=settings.access_token_ttl,
        reload_interval=settings.key_reload_interval,
        enc_key_id=enc_key_id,
    )
    await keys.create_indexes()
    await keys.ensure()
    outbox = rt.bus.outbox()  # relayed to novapulse:events:auth by the worker role
    passwords = await rt.open(
        hashing(
            PasswordHashing(
                memory_kib=settings.argon2_memory_kib,
                time_cost=settings.argon2_time_cost,
                workers=settings.password_hash_workers,
            )
        )
    )
    sessions = SessionService(
        repo,
        keys,
        rt.redis,
        rt.tokens.revocations,
        refresh_ttl=settings.refresh_token_ttl,
        session_max_age=settings.session_max_age,
        namespace=rt.tokens.revocations.namespace if rt.tokens.revocations else default_namespace(),
    )
    guard = LoginGuard(
        repo,
        outbox,
        client_limit=settings.login_account_limit,
        account_ceiling=settings.login_account_ceiling,
        window=settings.login_failure_window,
    )
    mfa = MfaService(
        repo,
        box,
        rt.redis,
        sessions,
        passwords,
        outbox,
        issuer=settings.mfa_issuer,
        enc_key_id=enc_key_id,
        guard=guard,
    )
    accounts = AccountService(repo, passwords, sessions, mfa, outbox, guard)
    invites = InviteService(repo, passwords, outbox, ttl=settings.invite_ttl, accept_url=settings.invite_accept_url)
    registration = RegistrationService(
        repo,
        passwords,
        outbox,
        accounts,
        sessions,
        ttl=settings.registration_ttl,
        verify_url=settings.registration_verify_url,
    )
    return Services(repo, box, enc_key_id, keys, outbox, passwords, sessions, mfa, accounts, invites, registration)


@contextlib.asynccontextmanager
async def hashing(passwords: PasswordHashing) -> AsyncIterator[PasswordHashing]:
    """The password-hashing pool, shut down with the process."""
    try:
        yield passwords
    finally:
        passwords.close()


async def services(rt: Runtime) -> Services:
    """The process's one service graph (wired once, shared by the ``api`` and ``worker`` roots)."""
    return await rt.shared("services", lambda: wire(rt))


async def api(rt: Runtime) -> Routes:
    """Composition root of the ``api`` role: the service graph and its routes."""
    graph = await services(rt)
    settings = cast(AuthSettings, rt.settings)
    return build_routes(
        settings,
        accounts=graph.accounts,
        sessions=graph.sessions,
        invites=graph.invites,
        mfa=graph.mfa,
        keys=graph.keys,
        registration=graph.registration,
    )


async def worker(rt: Runtime) -> list[Worker]:
    """Composition root of the ``worker`` role: key rotation, revocation sync and the outbox relay."""
    graph = await services(rt)
    settings = cast(AuthSettings, rt.settings)
    return [
        rotation_worker(graph, settings.key_rotation_interval),
        revocation_sync_worker(graph, settings.revocation_sync_interval),
        rt.bus.outbox().relay,
    ]
