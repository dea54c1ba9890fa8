"""Composition root of the auth service (wiring only): the shared service graph (:func:`wire`, once per
process under ``rt.shared``), the ``api`` and ``worker`` roots, and :data:`SPEC`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from novapulse_runtime.process import ServiceSpec
from novapulse_runtime.routes import Routes
from novapulse_runtime.runtime import Runtime, Worker
from novapulse_runtime.secretbox import SecretBox

from .accounts import AccountService
from .api import build_routes
from .invites import InviteService
from .lockout import LoginGuard
from .mfa import MfaService
from .passwords import PasswordHashing, hashing_pool
from .ports import Outbox
from .reencrypt import key_id
from .registration import RegistrationService
from .repository import Repository
from .sessions import SessionService
from .settings import AuthSettings
from .signing import KeyRing
from .worker import revocation_sync_worker, rotation_worker


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
    repo = await rt.repository(Repository)
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
        hashing_pool(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            workers=settings.password_hash_workers,
        )
    )
    sessions = SessionService(
        repo,
        keys,
        rt.redis,
        rt.tokens.revocations,
        refresh_ttl=settings.refresh_token_ttl,
        session_max_age=settings.session_max_age,
        namespace=rt.settings.events_namespace,
    )
    guard = LoginGuard(
        repo,
        outbox,
        rt.redis,
        client_limit=settings.login_account_limit,
        account_ceiling=settings.login_account_ceiling,
        window=settings.login_failure_window,
        namespace=rt.settings.events_namespace,
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
        rotation_worker(graph.keys, graph.repo, graph.box, graph.enc_key_id, interval=settings.key_rotation_interval),
        revocation_sync_worker(graph.repo, graph.sessions, interval=settings.revocation_sync_interval),
        rt.bus.outbox().relay,
    ]


SPEC = ServiceSpec(
    name="auth",
    settings_cls=AuthSettings,
    api=api,
    worker=worker,
    title="NovaPulse auth",
    package="novapulse_auth",
)
