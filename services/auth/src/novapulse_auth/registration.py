"""Registration by e-mail verification: ``POST /register`` answers the same for a new and a registered
address, so it cannot be used to find out who has an account.

Both paths do the same work, in the same order: one look-up by e-mail, one argon2id hash of the password,
one new token, and one transaction writing one ``registrations`` document (the same fields; only a new
address's keeps the hash) and one outbox event —

- a new address gets ``registration.verification_requested`` (private: carries the token and the link; the
  document holds only the token's SHA-256 and the password's hash, and expires after ``REGISTRATION_TTL``);
- a registered address gets ``user.registration_attempted`` (private: the owner is told by mail that someone
  tried to register it, from which address); its document can never be verified.

``POST /register/verify {token, password}`` checks the password against the one given at registration
(argon2), then spends the token and creates the organisation and its owner, emits ``user.registered`` and
signs the owner in. Without the password the link is useless: someone who registers another person's address
never receives the link, and that person, who does, does not know the password, so neither can complete it.
A wrong password does not spend the token; ``REGISTRATION_MAX_FAILURES`` of them void the registration. When
the account cannot be created for any reason but the address being taken meanwhile (409), the registration is
made pending again, so the same link works once the cause is gone.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from novapulse_runtime.catalog.auth import RegistrationAttempted, VerificationRequested

from .accounts import AccountService, check_password, org_out, user_out
from .constants import REGISTRATION_MAX_FAILURES, REGISTRATION_TOKEN_PREFIX
from .errors import EmailTaken, InvalidRegistrationLink
from .models import OrgOut, UserOut
from .opaque import new_token, token_hash
from .passwords import PasswordHashing
from .ports import Outbox
from .repository import Repository, registration_doc
from .sessions import SessionService, TokenPair


def normalised_address(email: str) -> str:
    """The mailbox an address reaches, for per-recipient budgets: lower case, without a ``+tag`` in the
    local part (``Ann+1@Example.com`` and ``ann@example.com`` reach the same inbox)."""
    local, _, domain = email.strip().lower().rpartition("@")
    return f"{local.split('+', 1)[0] or local}@{domain}"


class RegistrationService:
    """Registration by e-mail verification (see the module's docstring for why both paths look the same)."""

    def __init__(
        self,
        repo: Repository,
        passwords: PasswordHashing,
        outbox: Outbox,
        accounts: AccountService,
        sessions: SessionService,
        *,
        ttl: int,
        verify_url: str,
    ) -> None:
        """:param ttl: seconds a registration link stays valid (``REGISTRATION_TTL``).
        :param verify_url: the page the mailed link opens; the token is added as ``?token=``.
        """
        self._repo = repo
        self._passwords = passwords
        self._outbox = outbox
        self._accounts = accounts
        self._sessions = sessions
        self._ttl = ttl
        self._verify_url = verify_url

    @property
    def ttl(self) -> int:
        """Seconds a registration link stays valid."""
        return self._ttl

    async def request(self, email: str, password: str, name: str, organization: str, ip: str) -> None:
        """Start a registration. Returns nothing either way: the answer must not tell a new address from a registered
        one. A new address gets ``registration.verification_requested`` (token and link), a registered one
        ``user.registration_attempted`` (its owner is told); both hash the password once (argon2id, RFC 9106).

        :param email: normalised here (stripped, lower case).
        :param ip: the client address, told to the owner of a registered address.
        :raises WeakPassword: (422) the password breaks the policy (checked before the address is looked up).
        """
        email = email.strip().lower()
        check_password(password, email=email, name=name)
        existing = await self._repo.user_by_email(email)
        hashed = await self._passwords.hash(password)
        token = new_token(REGISTRATION_TOKEN_PREFIX)
        doc = registration_doc(
            token_hash=token_hash(token),
            email=email,
            name=name,
            organization=organization,
            password_hash=hashed,
            attempted=existing is not None,  # keeps no hash of what was typed (it may be the owner's password)
            ttl=self._ttl,
        )
        expires_at = doc["expires_at"]
        async with self._outbox.transaction() as session:
            await self._repo.insert_registration(doc, session)
            if existing is None:
                await self._outbox.add(
                    "registration.verification_requested",
                    VerificationRequested(
                        email=email,
                        name=name,
                        organization=organization,
                        token=token,
                        verify_url=f"{self._verify_url}?{urlencode({'token': token})}",
                        expires_at=expires_at,
                    ),
                    org_id="",  # no organisation exists yet
                    subject=doc["_id"],
                    session=session,
                )
            else:
                await self._outbox.add(
                    "user.registration_attempted",
                    RegistrationAttempted(user_id=existing["_id"], org_id=existing["org_id"], ip=ip),
                    org_id=existing["org_id"],
                    subject=existing["_id"],
                    session=session,
                )

    async def verify(self, token: str, password: str) -> tuple[UserOut, OrgOut, TokenPair]:
        """Complete a registration: the token from the mail **and** the password given at ``/register``.

        The link alone is not enough: whoever registered someone else's address knows the password but never sees
        the link, and the address's owner has the link but not the password. A wrong password answers like an
        unknown token and does not spend it; after ``REGISTRATION_MAX_FAILURES`` wrong passwords the registration
        is void. An unknown token costs one argon2 verification too (same time).

        :returns: the new owner, their organisation and their first token pair.
        :raises InvalidRegistrationLink: (400) unknown, expired, void or used token, or a wrong password.
        :raises EmailTaken: (409) the address was registered meanwhile (the registration is spent for good).
        :raises AccountChangedDuringLogin: (401) the new user changed while the session was created.
        """
        doc = await self._repo.take_registration_attempt(token_hash(token), REGISTRATION_MAX_FAILURES)
        ok = await self._passwords.verify(doc.get("password_hash") if doc else None, password)
        if doc is None:
            raise InvalidRegistrationLink()
        if not ok:
            if doc.get("failures", 0) >= REGISTRATION_MAX_FAILURES:
                await self._repo.void_registration(doc["_id"])
            raise InvalidRegistrationLink()
        claimed = await self._repo.claim_registration(doc["_id"])
        if claimed is None:
            raise InvalidRegistrationLink()
        try:
            user, org = await self._accounts.create_owner(
                claimed["email"], claimed["name"], claimed["organization"], claimed["password_hash"]
            )
        except EmailTaken:
            raise  # the address was registered meanwhile: the registration is spent for good
        except BaseException:
            # nothing was created (one transaction): give the link back rather than strand the registration
            await asyncio.shield(self._repo.release_registration(claimed["_id"]))
            raise
        pair = await self._sessions.start(user, ["pwd"])
        return user_out(user), org_out(org), pair
