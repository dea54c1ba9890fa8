"""Background loops of the auth service's ``worker`` role (each a :func:`~novapulse_runtime.process.periodic`
worker returned by a factory that binds what it needs): signing-key rotation with re-encryption of secrets,
and the revocation sync."""

from __future__ import annotations

import logging

from novapulse_runtime.process import periodic
from novapulse_runtime.runtime import Worker
from novapulse_runtime.secretbox import SecretBox

from .reencrypt import reencrypt
from .repository import Repository
from .sessions import SessionService, sync_revocations
from .signing import KeyRing

log = logging.getLogger(__name__)

ROTATION_CHECK_MIN = 5.0
"""Seconds: the shortest pause between two rotation checks."""
ROTATION_CHECK_MAX = 300.0
"""Seconds: the longest pause between two rotation checks."""


def rotation_worker(
    keys: KeyRing,
    repo: Repository,
    box: SecretBox,
    enc_key_id: str,
    *,
    interval: int,
    check_every: float | None = None,
) -> Worker:
    """Rotates the signing key once it is older than ``interval`` seconds (``KEY_ROTATION_INTERVAL``), and
    re-encrypts secrets still under an older ``AUTH_ENCRYPTION_KEYS`` key (``enc_key_id`` names the newest).

    It checks every ``check_every`` seconds (default: a quarter of ``interval``, within 5 s to 5 min). A
    failed round (a database outage) is logged and retried at the next check."""
    pause = check_every if check_every is not None else max(ROTATION_CHECK_MIN, min(interval / 4, ROTATION_CHECK_MAX))

    async def check() -> None:
        await keys.load()
        if keys.rotation_due(interval):
            await keys.rotate()
            log.info("signing key rotated")
        await reencrypt(repo, box, enc_key_id)

    return periodic("key-rotation", pause, check)


def revocation_sync_worker(repo: Repository, sessions: SessionService, *, interval: float) -> Worker:
    """Every ``interval`` seconds (``REVOCATION_SYNC_INTERVAL``), rewrites into Redis the session revocations
    of the last access-token lifetime that Redis lost (MongoDB is the truth), so verifiers honour them again
    (:func:`.sessions.sync_revocations`). A failed round is logged and retried."""

    async def sync() -> None:
        restored = await sync_revocations(repo, sessions)
        if restored:
            log.warning("session revocations restored into Redis", extra={"count": restored})

    return periodic("revocation-sync", interval, sync)
