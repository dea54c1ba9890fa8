"""Password policy and argon2id hashing, run in a small bounded thread pool off the event loop.

argon2-cffi releases the GIL while hashing, so a couple of threads use the cores without starving the loop;
the pool size bounds memory (each hash holds ``m`` KiB) and CPU under a login storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import unicodedata
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from importlib import resources

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .constants import ARGON2_PARALLELISM, HASH_THREAD_NICENESS, PASSWORD_MAX, PASSWORD_MIN

_DECORATION = re.compile(r"^[0-9]{0,4}(?P<core>.*?)[0-9!@#$%^&*?._\-]{0,6}$")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (lower case)."""
    text = resources.files("novapulse_auth").joinpath("data/common_passwords.txt").read_text("utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def password_problem(password: str, *, email: str = "", name: str = "") -> str | None:
    """Why a new password is refused, or ``None`` when it is acceptable."""
    normalized = unicodedata.normalize("NFKC", password)
    if len(normalized) < PASSWORD_MIN:
        return f"The password must have at least {PASSWORD_MIN} characters"
    if len(normalized) > PASSWORD_MAX:
        return f"The password must have at most {PASSWORD_MAX} characters"
    lowered = normalized.lower()
    common = common_passwords()
    match = _DECORATION.match(lowered)
    core = match.group("core") if match else lowered
    if lowered in common or (len(core) >= 4 and core in common):
        return "The password is too common; choose another"
    if len(set(lowered)) < 3:
        return "The password is too repetitive"
    local = email.split("@", 1)[0].lower()
    if (len(local) >= 4 and local in lowered) or (name and lowered == name.lower()):
        return "The password must not contain your e-mail address or name"
    return None


def _lower_thread_priority() -> None:
    """Hashing threads run at a lower CPU priority than the event loop's thread (Linux schedules threads
    separately), so under contention probes and light requests are served first and log-ins queue."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)


class PasswordHashing:
    """argon2id hashing and verification on a bounded executor."""

    def __init__(self, *, memory_kib: int, time_cost: int, workers: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=ARGON2_PARALLELISM, type=Type.ID
        )
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="argon2", initializer=_lower_thread_priority
        )
        # Verified against when the account does not exist, so unknown e-mails cost the same time.
        self._dummy = self._hasher.hash("novapulse-dummy-password")
        self.hashed = 0

    async def hash(self, password: str) -> str:
        self.hashed += 1  # how many hashes this process computed (shows that both registration paths hash)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._hasher.hash, unicodedata.normalize("NFKC", password))

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, unicodedata.normalize("NFKC", password)) and bool(stored)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when ``password`` matches ``stored``; with ``stored=None`` spends the same time and fails."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._verify, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@contextlib.asynccontextmanager
async def hashing_pool(*, memory_kib: int, time_cost: int, workers: int) -> AsyncIterator[PasswordHashing]:
    """A :class:`PasswordHashing` whose thread pool is shut down on exit (opened with the runtime:
    ``await rt.open(hashing_pool(...))``). ``memory_kib``: argon2 ``m`` in KiB; ``time_cost``: ``t``
    (passes); ``workers``: threads (RFC 9106 §4 parameters)."""
    passwords = PasswordHashing(memory_kib=memory_kib, time_cost=time_cost, workers=workers)
    try:
        yield passwords
    finally:
        passwords.close()
