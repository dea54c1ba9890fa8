"""Log-in lockout keyed on the identity it protects.

A global "5 wrong passwords per account" lockout lets anyone lock the real owner out. Instead, wrong passwords
are counted per (account, client) and per account, in MongoDB (they survive a Redis flush):

- ``LOGIN_ACCOUNT_LIMIT`` failures from one client (its address, an IPv6 client by its ``/64``: see
  ``novapulse_runtime.ratelimit.client_network``) within ``LOGIN_FAILURE_WINDOW`` seconds block that client
  for this account, right password or not;
- ``LOGIN_ACCOUNT_CEILING`` failures from all clients together block every client that never presented the
  right password for this account; a *known* client (one that was issued a session with it, after the
  second factor when MFA is on; remembered as a salted hash of its network in the user's document, newest
  ``KNOWN_CLIENTS_MAX``) still gets in with the right password.

Counters are keyed on a hash of the normalised e-mail, not on the user, so an unknown address is blocked
exactly like a known one (no enumeration through 429s). When a block starts, ``user.login_blocked`` is
written to the outbox once per block (the owner is mailed by the notification service).

An attempt is counted *before* its password is checked and taken back when the password was right, so a
burst of parallel guesses cannot all slip under the limit: the attempt is written first, then the failures
of the window other than it are read (newest first, bounded by the limit), and the attempt is refused (its
record removed) when they already reach a limit. A successful log-in costs three database commands here
from a known client (the insert, one bounded read, the take-back by ``_id``), four from another one; the
earlier read-insert-count took five and six (two reads, the insert, one or two ``count_documents``, which
read every matching failure, and a ``delete_many``).
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from novapulse_runtime.catalog.auth import LoginBlocked

from .constants import KNOWN_CLIENTS_MAX
from .errors import AccountLocked
from .ports import Outbox
from .repository import Repository


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def known_client_hash(user_id: str, client: str) -> str:
    """What the user's document stores for a known client: the network salted with the user id (not
    reversible by a table over all addresses at once)."""
    return _digest("known", user_id, client)[:32]


@dataclass(frozen=True)
class Attempt:
    """One log-in attempt under way: the id of its presumed-failure record, the account's key (SHA-256 of the
    normalised e-mail), the (account, client) key and the client network.
    """

    id: str
    account: str
    pair: str
    client: str
    earlier: int = 0
    """Failures of this (account, client) in the window other than this attempt, when it began (at most
    ``LOGIN_ACCOUNT_LIMIT - 1``): none means the take-back removes this attempt's record alone."""


class LoginGuard:
    """Per-(account, client) failure budget with a per-account ceiling that known clients pass (see the module's
    docstring; the per-account lockout of NIST SP 800-63B §5.2.2, keyed so that an attacker cannot lock the
    owner out).
    """

    def __init__(self, repo: Repository, outbox: Outbox, *, client_limit: int, account_ceiling: int, window: int):
        """:param client_limit: wrong passwords per (account, client) per window (``LOGIN_ACCOUNT_LIMIT``).
        :param account_ceiling: wrong passwords per account from unknown clients per window
            (``LOGIN_ACCOUNT_CEILING``; raised to ``client_limit`` when below it).
        :param window: seconds the failures are counted over (``LOGIN_FAILURE_WINDOW``).
        """
        self._repo = repo
        self._outbox = outbox
        self._client_limit = client_limit
        self._ceiling = max(account_ceiling, client_limit)  # a ceiling below one client's budget is that budget
        self._window = window

    @staticmethod
    def is_known(user: dict[str, Any] | None, client: str) -> bool:
        """Whether ``client`` (a network) was issued a session for ``user`` (among its ``known_clients``)."""
        if user is None:
            return False
        return known_client_hash(user["_id"], client) in (user.get("known_clients") or [])

    async def _blocks(
        self, account: str, pair: str, known: bool, *, exclude: str | None = None
    ) -> tuple[list[tuple[str, float, int]], int]:
        """The blocks in force, ``(scope, seconds left, failures)``, and how many failures of the (account,
        client) were read (at most ``client_limit``). The account's failures are read only for a client not
        known to it (a known client passes the ceiling). ``exclude``: the id of an attempt under way, not
        counted."""
        current = time.time()
        since = current - self._window
        mine = await self._repo.login_failures_since(account, since, self._client_limit, pair=pair, exclude=exclude)
        out: list[tuple[str, float, int]] = []
        if len(mine) >= self._client_limit:
            out.append(("client", float(mine[-self._client_limit]["ts"]) + self._window - current, len(mine)))
        if not known:
            recent = await self._repo.login_failures_since(account, since, self._ceiling, exclude=exclude)
            if len(recent) >= self._ceiling:
                out.append(("account", float(recent[-self._ceiling]["ts"]) + self._window - current, len(recent)))
        return out, len(mine)

    async def begin(self, email: str, client: str, user: dict[str, Any] | None) -> Attempt:
        """Count the attempt as a failure until :meth:`succeeded` takes it back, then refuse it when the failures
        already in the window (parallel attempts under way count as failures) block this client (so parallel
        guesses cannot all slip under the limit).

        :param email: the normalised e-mail typed (counters are keyed on it, so unknown addresses are blocked alike).
        :param user: the account's document, or ``None`` when there is none.
        :returns: the attempt, for :meth:`succeeded` or :meth:`failed`.
        :raises AccountLocked: (429) the client is blocked for this account; ``retry_after`` is the seconds until
            the block ends (at least 1). The refused attempt is not counted.
        """
        account, pair = _digest("account", email), _digest("pair", email, client)
        known = self.is_known(user, client)
        failure_id = uuid.uuid4().hex
        await self._repo.insert_login_failure(failure_id, account, pair, time.time())
        blocks, earlier = await self._blocks(account, pair, known, exclude=failure_id)
        if blocks:
            await self._repo.delete_login_failure(failure_id)
            raise _blocked(max(b[1] for b in blocks))
        return Attempt(failure_id, account, pair, client, earlier)

    async def succeeded(self, attempt: Attempt) -> None:
        """The right password: the attempt and this client's earlier failures are forgotten. The client does
        not become known here: with MFA on, the password alone must not push the owner's networks out of
        ``known_clients`` (see :meth:`remember`)."""
        if attempt.earlier:
            await self._repo.forget_login_failures(attempt.account, attempt.pair)
        else:  # nothing earlier to forget: one delete by _id instead of a scan of the account's failures
            await self._repo.delete_login_failure(attempt.id)

    async def remember(self, user: dict[str, Any], client: str) -> None:
        """A session was issued to ``client`` (after the second factor when MFA is on): it becomes known to the
        account, newest first, at most ``KNOWN_CLIENTS_MAX``."""
        mark = known_client_hash(user["_id"], client)
        known = [str(k) for k in (user.get("known_clients") or [])]
        updated = [mark, *[k for k in known if k != mark]][:KNOWN_CLIENTS_MAX]
        if updated != known:
            await self._repo.remember_client(user["org_id"], user["_id"], updated)

    async def failed(self, attempt: Attempt, user: dict[str, Any] | None, ip: str) -> None:
        """A wrong password (the attempt stays counted): when it starts a block, tell the owner once."""
        await self._repo.prune_login_failures(attempt.account, time.time() - self._window)
        blocks, _ = await self._blocks(attempt.account, attempt.pair, known=False)
        for scope, left, failures in blocks:
            key = attempt.pair if scope == "client" else attempt.account
            if not await self._repo.claim_login_block(key, time.time() + left) or user is None:
                continue
            await self._outbox.add(
                "user.login_blocked",
                LoginBlocked(
                    user_id=user["_id"],
                    org_id=user["org_id"],
                    ip=ip,
                    failures=failures,
                    scope=scope,  # type: ignore[arg-type]
                    retry_after_s=max(1, math.ceil(left)),
                ),
                org_id=user["org_id"],
                subject=user["_id"],
            )


def _blocked(seconds: float) -> AccountLocked:
    return AccountLocked(retry_after=max(1, math.ceil(seconds)))
