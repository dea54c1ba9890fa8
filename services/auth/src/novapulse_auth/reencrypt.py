"""Re-encryption of secrets at rest after ``AUTH_ENCRYPTION_KEYS`` changes.

Each encrypted record notes the id of the key that encrypted it (``enc_key_id``, a fingerprint of the newest
key). The worker re-encrypts records under an older key; once none is left, the old key can be dropped from
the setting.
"""

from __future__ import annotations

import hashlib
import logging

from novapulse_runtime.documents import Doc
from novapulse_runtime.secretbox import SecretBox

from .repository import KEY_SECRET_FIELDS, USER_SECRET_FIELDS, Repository

log = logging.getLogger(__name__)


def key_id(key: str) -> str:
    """A short, non-reversible fingerprint of a Fernet key: 16 hex digits of SHA-256."""
    return hashlib.sha256(b"novapulse-auth-key-id:" + key.encode()).hexdigest()[:16]


def _rotated(box: SecretBox, doc: Doc, fields: tuple[str, ...]) -> tuple[Doc, Doc]:
    """The encrypted fields of ``doc`` that are set, as stored and re-encrypted under the newest key."""
    present = {f: doc[f] for f in fields if doc.get(f)}
    return present, {f: box.rotate(v) for f, v in present.items()}


async def reencrypt(repo: Repository, box: SecretBox, current: str) -> int:
    """Re-encrypt every secret not under the newest key (``current``: its :func:`key_id`); returns how many
    records changed. Each is a compare-and-set: a record changed meanwhile (a new set-up, say) is left for the
    next round."""
    changed = 0
    for doc in await repo.users_under_older_key(current):
        old, new = _rotated(box, doc, USER_SECRET_FIELDS)
        changed += await repo.swap_user_secrets(doc["_id"], old, new, current)
    for doc in await repo.signing_keys.under_older_key(current):
        old, new = _rotated(box, doc, KEY_SECRET_FIELDS)
        changed += await repo.signing_keys.swap_secrets(doc["_id"], old, new, current)
    if changed:
        log.info("secrets re-encrypted under the newest key", extra={"records": changed})
    return changed
