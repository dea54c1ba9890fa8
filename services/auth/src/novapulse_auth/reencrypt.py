"""Re-encryption of secrets at rest after ``AUTH_ENCRYPTION_KEYS`` changes.

Each encrypted record notes the id of the key that encrypted it (``enc_key_id``, a fingerprint of the newest
key). The worker re-encrypts records under an older key; once none is left, the old key can be dropped from
the setting.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from novapulse_runtime.secretbox import SecretBox

from .repository import Repository

log = logging.getLogger(__name__)

_USER_FIELDS = ("mfa_secret_enc", "mfa_pending_enc")


def key_id(key: str) -> str:
    """A short, non-reversible fingerprint of a Fernet key."""
    return hashlib.sha256(b"novapulse-auth-key-id:" + key.encode()).hexdigest()[:16]


async def reencrypt(repo: Repository, box: SecretBox, current: str) -> int:
    """Re-encrypt every secret not under the newest key; returns how many records changed."""
    changed = 0
    stale_users = {
        "enc_key_id": {"$ne": current},
        "$or": [{f: {"$nin": [None, ""]}} for f in _USER_FIELDS],
    }
    for doc in await repo.users.find(stale_users).to_list(None):
        changed += await _rotate(repo.users, box, current, doc, _USER_FIELDS)
    stale_keys = {"enc_key_id": {"$ne": current}, "private_enc": {"$nin": [None, ""]}}
    for doc in await repo.signing_keys.find(stale_keys).to_list(None):
        changed += await _rotate(repo.signing_keys, box, current, doc, ("private_enc",))
    if changed:
        log.info("secrets re-encrypted under the newest key", extra={"records": changed})
    return changed


async def _rotate(coll: Any, box: SecretBox, current: str, doc: dict[str, Any], fields: tuple[str, ...]) -> int:
    present = {f: doc[f] for f in fields if doc.get(f)}
    changes: dict[str, Any] = {f: box.rotate(v) for f, v in present.items()}
    changes["enc_key_id"] = current
    # Compare-and-set: a record changed meanwhile (new set-up, say) is left for the next round.
    result = await coll.update_one({"_id": doc["_id"], **present}, {"$set": changes})
    return int(result.modified_count)
