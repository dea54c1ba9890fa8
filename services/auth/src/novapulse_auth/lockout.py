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

An attempt is counted *before* its password is checked, so a burst of parallel guesses cannot all slip
under the limit. Wrong passwords are MongoDB documents (``login_failures``: they survive a Redis flush and a
restart); attempts still under way are marks in Redis sorted sets (one per (account, client), one per account,
member = attempt id, score = start time), added and counted by one atomic Lua script and removed when the
attempt ends. A new attempt counts both: the failures of the window (newest first, bounded by the limit) and
the attempts in flight (as failures of now), and is refused when they reach a limit. A wrong password becomes
a document *before* its mark is removed, so a parallel attempt always sees it in one place or the other.
A mark left by a process that died mid-log-in stops counting after ``LOGIN_INFLIGHT_STALE`` seconds.

The account's document carries ``login_failed_ts``, the time of its newest attempt counted as a failure
document (raised with ``$max`` *before* that attempt's mark is removed, and by an attempt counted in MongoDB
before its reads). The user is read *after* the attempt's mark is added, so when a client the account knows
finds it no later than the window's start, no failure of the account is in the window and nothing changed it
since the mark: the bounded read is skipped and only the attempts in flight are counted. The same argument as
for the marks: a parallel wrong password either still had its mark when this one was added (counted as in
flight), or had raised ``login_failed_ts`` before it (the read is done). Clients the account does not know
(an attacker, in the usual case) always read, so a registered address costs what an unknown one does for them.

A successful log-in from a known client with no wrong password of the account in the window therefore costs
no MongoDB command here (one bounded read otherwise, two from a client the account does not know, a
``delete_many`` of the client's failures only when it had earlier ones) and two Redis scripts; a wrong
password one command more (``login_failed_ts``, the same command for an unknown address). With the attempt
itself written to MongoDB (insert, read, take-back by ``_id``) it was three and four commands, and five and six
with the read-insert-count before that (issue 15).

When Redis cannot be reached the guard neither fails open nor closed: the attempt is counted in MongoDB as a
failure document inserted first and taken back on success (the earlier way, same guarantees, three commands);
attempts of both kinds count each other. Only a Redis flush *during* a burst forgets the attempts then in
flight (their marks), never a wrong password.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from novapulse_runtime.catalog.auth import LoginBlocked

from .constants import KNOWN_CLIENTS_MAX, LOGIN_FAILED_TS, LOGIN_INFLIGHT_STALE
from .errors import AccountLocked
from .ports import Outbox
from .repository import Repository

log = logging.getLogger(__name__)

# KEYS: the in-flight sets (the (account, client) one, then the account's); ARGV[1] attempt id, ARGV[2] how long
# a mark counts (ms). Per key: drop stale marks, count the others, add this one. Returns the counts. The server
# clock, so every process agrees on "now".
_RESERVE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - stale)
  out[i] = redis.call('ZCARD', key)
  redis.call('ZADD', key, now, ARGV[1])
  redis.call('PEXPIRE', key, stale)
end
return out
"""

# KEYS: the in-flight sets of :data:`_RESERVE`; ARGV[1] attempt id. Removes its marks.
_RELEASE = """
for _, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[1]) end
return 0
"""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def known_client_hash(user_id: str, client: str) -> str:
    """What the user's document stores for a known client: the network salted with the user id (not
    reversible by a table over all addresses at once)."""
    return _digest("known", user_id, client)[:32]


@dataclass(frozen=True)
class Attempt:
    """One log-in attempt under way: its id, the account's key (SHA-256 of the normalised e-mail), the
    (account, client) key, the client network and the normalised e-mail.
    """

    id: str
    account: str
    pair: str
    client: str
    email: str
    earlier: int = 0
    """Failures of this (account, client) in the window when it began (at most ``LOGIN_ACCOUNT_LIMIT - 1``):
    none means there are none to forget on success."""
    marked: bool = True
    """Counted by marks in Redis (``False``: Redis was unreachable, so by a failure document in MongoDB with
    ``_id`` = :attr:`id`, taken back on success)."""
    user: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    """The account's user document, read after the attempt was counted (``None``: no such user)."""


class LoginGuard:
    """Per-(account, client) failure budget with a per-account ceiling that known clients pass (see the module's
    docstring; the per-account lockout of NIST SP 800-63B §5.2.2, keyed so that an attacker cannot lock the
    owner out).
    """

    def __init__(
        self,
        repo: Repository,
        outbox: Outbox,
        redis: Redis,
        *,
        client_limit: int,
        account_ceiling: int,
        window: int,
        namespace: str,
    ):
        """:param redis: where attempts under way are marked (see the module's docstring).
        :param namespace: prefix of the Redis keys (``EVENTS_NAMESPACE``): ``<ns>:auth:login-inflight:{<account>}``
            and ``…:{<account>}:<pair>`` (one hash slot per account, for Redis Cluster).
        :param client_limit: wrong passwords per (account, client) per window (``LOGIN_ACCOUNT_LIMIT``).
        :param account_ceiling: wrong passwords per account from unknown clients per window
            (``LOGIN_ACCOUNT_CEILING``; raised to ``client_limit`` when below it).
        :param window: seconds the failures are counted over (``LOGIN_FAILURE_WINDOW``).
        """
        self._repo = repo
        self._outbox = outbox
        self._client_limit = client_limit
        self._ceiling = max(account_ceiling, client_limit)  # a ceiling below one client's budget is that budget
        self._window = window
        self._namespace = namespace
        self._reserve = redis.register_script(_RESERVE)
        self._release_script = redis.register_script(_RELEASE)

    @staticmethod
    def is_known(user: dict[str, Any] | None, client: str) -> bool:
        """Whether ``client`` (a network) was issued a session for ``user`` (among its ``known_clients``)."""
        if user is None:
            return False
        return known_client_hash(user["_id"], client) in (user.get("known_clients") or [])

    def _inflight_keys(self, account: str, pair: str) -> list[str]:
        base = f"{self._namespace}:auth:login-inflight:{{{account}}}"
        return [f"{base}:{pair}", base]

    async def _blocks(
        self,
        account: str,
        pair: str,
        known: bool,
        *,
        exclude: str | None = None,
        inflight: tuple[int, int] = (0, 0),
        failed_ts: float | None = None,
    ) -> tuple[list[tuple[str, float, int]], int]:
        """The blocks in force, ``(scope, seconds left, failures)``, and how many failures of the (account,
        client) were read (at most ``client_limit``). The account's failures are read only for a client not
        known to it (a known client passes the ceiling). ``exclude``: the id of an attempt's failure document,
        not counted; ``inflight``: other attempts under way of the (account, client) and of the account, counted
        as failures of now; ``failed_ts``: the account's ``login_failed_ts`` read after this attempt's mark was
        added (``None``: not known), which spares a known client the read when it is no later than the window's
        start (see the module's docstring)."""
        current = time.time()
        since = current - self._window
        if known and exclude is None and failed_ts is not None and failed_ts <= since:
            mine: list[dict[str, Any]] = []  # no failure of the account in the window, none since the mark
        else:
            mine = await self._repo.login_failures_since(account, since, self._client_limit, pair=pair, exclude=exclude)
        out: list[tuple[str, float, int]] = []
        block = _block(mine, inflight[0], self._client_limit, current)
        if block is not None:
            out.append(("client", block + self._window - current, len(mine) + inflight[0]))
        if not known:
            recent = await self._repo.login_failures_since(account, since, self._ceiling, exclude=exclude)
            block = _block(recent, inflight[1], self._ceiling, current)
            if block is not None:
                out.append(("account", block + self._window - current, len(recent) + inflight[1]))
        return out, len(mine)

    async def begin(
        self,
        email: str,
        client: str,
        find_user: Callable[[], Awaitable[dict[str, Any] | None]] | None = None,
    ) -> Attempt:
        """Count the attempt as a failure until :meth:`succeeded` takes it back, read the account's user, then
        refuse the attempt when the failures already in the window (parallel attempts under way count as failures)
        block this client (so parallel guesses cannot all slip under the limit).

        :param email: the normalised e-mail typed (counters are keyed on it, so unknown addresses are blocked alike).
        :param find_user: reads the account's user document (``None`` when there is none); called once the attempt
            is counted, never before (see the module's docstring). ``None``: no user.
        :returns: the attempt, for :meth:`succeeded` or :meth:`failed`, with the user in :attr:`Attempt.user`.
        :raises AccountLocked: (429) the client is blocked for this account; ``retry_after`` is the seconds until
            the block ends (at least 1). The refused attempt is not counted.
        """
        account, pair = _digest("account", email), _digest("pair", email, client)
        attempt_id = uuid.uuid4().hex
        try:
            counts = await self._reserve(
                keys=self._inflight_keys(account, pair), args=[attempt_id, LOGIN_INFLIGHT_STALE * 1000]
            )
            inflight, exclude = (int(counts[0]), int(counts[1])), None
        except (RedisError, OSError) as exc:  # count it in MongoDB instead: same guarantees, three commands more
            log.warning("login lockout: Redis unreachable, attempt counted in MongoDB", extra={"error": repr(exc)})
            now = time.time()
            await self._repo.insert_login_failure(attempt_id, account, pair, now)
            await self._repo.note_login_failure(email, now)  # so a marked attempt elsewhere reads it
            inflight, exclude = (0, 0), attempt_id
        attempt = Attempt(attempt_id, account, pair, client, email, marked=exclude is None)
        try:
            user = await find_user() if find_user is not None else None
            failed_ts = user.get(LOGIN_FAILED_TS) if user is not None else None
            blocks, earlier = await self._blocks(
                account,
                pair,
                self.is_known(user, client),
                exclude=exclude,
                inflight=inflight,
                failed_ts=float(failed_ts) if isinstance(failed_ts, int | float) else None,
            )
        except BaseException:
            await self._end(attempt)  # not left counted as under way until it goes stale
            raise
        if blocks:
            await self._end(attempt)
            raise _blocked(max(b[1] for b in blocks))
        return replace(attempt, earlier=earlier, user=user)

    async def _end(self, attempt: Attempt) -> None:
        """The attempt no longer counts as under way: its marks removed (a Redis failure is logged; they stop
        counting after ``LOGIN_INFLIGHT_STALE`` s), or its failure document deleted."""
        if not attempt.marked:
            await self._repo.delete_login_failure(attempt.id)
            return
        try:
            await self._release_script(keys=self._inflight_keys(attempt.account, attempt.pair), args=[attempt.id])
        except (RedisError, OSError) as exc:
            log.warning("login lockout: in-flight mark not removed", extra={"error": repr(exc)})

    async def succeeded(self, attempt: Attempt) -> None:
        """The right password: the attempt and this client's earlier failures are forgotten. The client does
        not become known here: with MFA on, the password alone must not push the owner's networks out of
        ``known_clients`` (see :meth:`remember`)."""
        if attempt.earlier:
            await self._repo.forget_login_failures(attempt.account, attempt.pair)  # the attempt's document too
            if attempt.marked:
                await self._end(attempt)
        else:  # nothing earlier to forget
            await self._end(attempt)

    async def remember(self, user: dict[str, Any], client: str) -> None:
        """A session was issued to ``client`` (after the second factor when MFA is on): it becomes known to the
        account, newest first, at most ``KNOWN_CLIENTS_MAX``."""
        mark = known_client_hash(user["_id"], client)
        known = [str(k) for k in (user.get("known_clients") or [])]
        updated = [mark, *[k for k in known if k != mark]][:KNOWN_CLIENTS_MAX]
        # A user stored before login_failed_ts existed gets it now, as if it had failed now: its earlier failures
        # are read for one more window, then its known clients are spared the read.
        failed_ts = time.time() if LOGIN_FAILED_TS not in user else None
        if updated != known or failed_ts is not None:
            await self._repo.remember_client(
                user["org_id"], user["_id"], updated if updated != known else None, failed_ts=failed_ts
            )

    async def failed(self, attempt: Attempt, user: dict[str, Any] | None, ip: str) -> None:
        """A wrong password (the attempt stays counted, as a failure document from now on; written before the
        attempt's marks go, so parallel attempts see it throughout): when it starts a block, tell the owner once."""
        if attempt.marked:
            now = time.time()
            await self._repo.insert_login_failure(attempt.id, attempt.account, attempt.pair, now)
            await self._repo.note_login_failure(attempt.email, now)  # before the mark goes (module docstring)
            await self._end(attempt)
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


def _block(failures: list[dict[str, Any]], inflight: int, limit: int, current: float) -> float | None:
    """When ``failures`` (the newest, oldest first) and ``inflight`` attempts (as failures at ``current``) reach
    ``limit``: the time (epoch s) of the ``limit``-th newest, from which the block lasts a window; else ``None``."""
    if len(failures) + inflight < limit:
        return None
    if inflight >= limit:
        return current
    return float(failures[-(limit - inflight)]["ts"])


def _blocked(seconds: float) -> AccountLocked:
    return AccountLocked(retry_after=max(1, math.ceil(seconds)))
