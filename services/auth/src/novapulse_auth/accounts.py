"""Accounts and organisations: registration, log-in, the caller's profile, and member management."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from novapulse_runtime.catalog.auth import PasswordChanged, UserDisabled, UserRegistered, UserRoleChanged
from novapulse_runtime.errors import field_error
from novapulse_runtime.paging import PageQuery, page
from novapulse_runtime.roles import MANAGERS, Role

from .constants import UserStatus
from .errors import (
    AccountInactive,
    CannotManage,
    EmailTaken,
    InvalidCredentials,
    MemberNotFound,
    MfaNotOn,
    OwnAccount,
    OwnerRoleFixed,
    RoleRequired,
    WeakPassword,
    WrongPassword,
)
from .lockout import LoginGuard
from .mfa import MfaService
from .models import MfaChallengeOut, OrgOut, TokenOut, UserOut
from .passwords import PasswordHashing, password_problem
from .ports import Outbox
from .repository import EmailInUse, Repository, new_id, org_doc, user_doc
from .sessions import SessionService

log = logging.getLogger(__name__)


def user_out(doc: dict[str, Any]) -> UserOut:
    """The API shape of a user document (``UserOut``): no password hash, no MFA secrets."""
    return UserOut(
        id=doc["_id"],
        email=doc["email"],
        name=doc["name"],
        role=doc["role"],
        status=doc.get("status", UserStatus.ACTIVE.value),
        org_id=doc["org_id"],
        mfa_enabled=bool(doc.get("mfa_enabled")),
        created_at=doc["created_at"],
    )


def org_out(doc: dict[str, Any]) -> OrgOut:
    """The API shape of an organisation document (``OrgOut``)."""
    return OrgOut(id=doc["_id"], name=doc["name"])


def check_password(password: str, *, email: str, name: str) -> None:
    """Apply the password policy to a new password (:func:`.passwords.password_problem`: 8 to 128 characters
    after NFKC normalisation, not common, not repetitive, not the e-mail's local part or the name; NIST SP
    800-63B §5.1.1.2).

    :raises WeakPassword: (422) the policy's reason as ``detail`` and as a field error on ``password``.
    """
    problem = password_problem(password, email=email, name=name)
    if problem:
        raise WeakPassword(
            problem,
            errors=[field_error("password", problem, "password_policy")],
        )


class AccountService:
    """Accounts and organisations: immediate registration, log-in, the caller's profile and password, and member
    management (roles, disabling). Every state change records its event in the outbox in the same transaction.
    """

    def __init__(
        self,
        repo: Repository,
        passwords: PasswordHashing,
        sessions: SessionService,
        mfa: MfaService,
        outbox: Outbox,
        guard: LoginGuard | None = None,
    ) -> None:
        """:param guard: the log-in lockout (:class:`.lockout.LoginGuard`); ``None`` turns it off (tests only)."""
        self._guard = guard
        self._repo = repo
        self._passwords = passwords
        self._sessions = sessions
        self._mfa = mfa
        self._outbox = outbox

    async def register(self, email: str, password: str, name: str, organization: str) -> tuple[UserOut, OrgOut]:
        """Immediate registration (``REGISTRATION_EMAIL_VERIFICATION=false``): a new organisation and its owner.
        Telling a registered address apart (409) allows account enumeration, so this mode is for development and
        tests only; the default path is :meth:`.registration.RegistrationService.request`.

        :param email: normalised here (stripped, lower case).
        :returns: the owner and the organisation.
        :raises WeakPassword: the password breaks the policy.
        :raises EmailTaken: an account with this address exists.
        """
        email = email.strip().lower()
        check_password(password, email=email, name=name)
        if await self._repo.email_taken(email):
            raise EmailTaken()
        hashed = await self._passwords.hash(password)
        user, org = await self.create_owner(email, name, organization, hashed)
        return user_out(user), org_out(org)

    async def create_owner(
        self, email: str, name: str, organization: str, password_hash: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Create an organisation and its owner in one transaction, with ``user.registered``.

        :param password_hash: an argon2id PHC string (RFC 9106), already computed.
        :returns: the user and organisation documents.
        :raises EmailTaken: the address was registered meanwhile (unique index on ``users.email``).
        """
        org_id = new_id()
        user = user_doc(email=email, name=name, org_id=org_id, role=Role.OWNER.value, password_hash=password_hash)
        org = org_doc(org_id=org_id, name=organization, owner_id=user["_id"])
        try:
            async with self._outbox.transaction() as session:
                await self._repo.insert_user(user, session)
                await self._repo.insert_org(org, session)
                await self._outbox.add(
                    "user.registered",
                    UserRegistered(
                        user_id=user["_id"],
                        org_id=org_id,
                        email=email,
                        name=name,
                        role="owner",
                        organization=organization,
                    ),
                    org_id=org_id,
                    subject=user["_id"],
                    session=session,
                )
        except EmailInUse as exc:
            raise EmailTaken() from exc
        return user, org

    async def login(self, email: str, password: str, ip: str, client: str | None = None) -> TokenOut | MfaChallengeOut:
        """Check an e-mail and password: tokens, or an MFA challenge when the account has MFA on.

        An unknown e-mail, a wrong password and a disabled account get the same status, body and (within noise)
        time: the password is verified against a dummy hash when there is no user (OWASP authentication cheat
        sheet). ``client`` is the caller's network (the rate-limit client key; ``ip`` when ``None``): wrong
        passwords count per (account, client) with a per-account ceiling that known clients pass (:mod:`.lockout`).

        :param ip: the client address, recorded in events.
        :returns: ``TokenOut`` (``expires_in`` in seconds) or ``MfaChallengeOut`` (``mfa_token``, ``expires_in`` s).
        :raises AccountLocked: (429) this client is blocked for this account; ``retry_after`` in seconds.
        :raises InvalidCredentials: (401) unknown e-mail, wrong password or disabled account.
        :raises AccountChangedDuringLogin: the user changed while the session was being created.
        """
        email = email.strip().lower()
        client = client if client is not None else ip
        guard = self._guard
        attempt = None
        if guard is not None:  # the user is read once the attempt is counted (lockout.py)
            attempt = await guard.begin(email, client, partial(self._repo.user_by_email, email))
            user = attempt.user
        else:
            user = await self._repo.user_by_email(email)
        ok = await self._passwords.verify(user.get("password_hash") if user else None, password)
        if not ok or user is None or user.get("status") != UserStatus.ACTIVE.value:
            if guard is not None and attempt is not None:
                await guard.failed(attempt, user, ip)
            raise InvalidCredentials()
        if guard is not None and attempt is not None:
            await guard.succeeded(attempt)  # forgets this client's failures; known only once signed in
        if user.get("mfa_enabled"):
            token, ttl = await self._mfa.start_challenge(user, ip)
            return MfaChallengeOut(mfa_token=token, expires_in=ttl)
        pair = await self._sessions.start(user, ["pwd"])
        if guard is not None:
            await guard.remember(user, client)
        return TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)

    async def profile(self, org_id: str, user_id: str) -> tuple[UserOut, OrgOut]:
        """The caller and their organisation.

        :raises AccountInactive: (401) the user or the organisation is gone, or the user is disabled.
        """
        user = await self._repo.user(org_id, user_id)
        org = await self._repo.org(org_id)
        if user is None or org is None or user.get("status") != UserStatus.ACTIVE.value:
            raise AccountInactive()
        return user_out(user), org_out(org)

    async def change_password(self, org_id: str, user_id: str, current: str, new: str, *, keep_sid: str) -> None:
        """Change the caller's password; every other session of theirs is revoked (``keep_sid`` stays), refresh at
        once and access tokens everywhere within 1 s, and ``user.password_changed`` is recorded.

        :raises AccountInactive: the caller is gone or disabled.
        :raises WrongPassword: (400) ``current`` is wrong.
        :raises WeakPassword: ``new`` breaks the password policy.
        """
        user = await self._repo.user(org_id, user_id)
        if user is None or user.get("status") != UserStatus.ACTIVE.value:
            raise AccountInactive()
        if not await self._passwords.verify(user.get("password_hash"), current):
            raise WrongPassword()
        check_password(new, email=user["email"], name=user["name"])
        hashed = await self._passwords.hash(new)
        async with self._outbox.transaction() as session:
            await self._repo.set_password(org_id, user_id, hashed, session)
            sids = await self._repo.revoke_user_sessions(org_id, user_id, "password-changed", session, keep=keep_sid)
            await self._outbox.add(
                "user.password_changed",
                PasswordChanged(user_id=user_id, org_id=org_id),
                org_id=org_id,
                subject=user_id,
                session=session,
            )
        await self._sweep_and_announce(org_id, user_id, "password-changed", sids, keep=keep_sid)

    async def members(self, org_id: str, query: PageQuery) -> tuple[list[UserOut], str | None]:
        """One page of the organisation's members (disabled ones included), in id order: the page and the
        cursor of the next one (``None`` on the last page; the runtime's one paging rule,
        :mod:`novapulse_runtime.paging`)."""
        docs = await self._repo.members(org_id, after=query.after, fetch=query.fetch)
        shown, next_cursor = page(docs, query.limit, key=lambda doc: str(doc["_id"]))
        return [user_out(d) for d in shown], next_cursor

    async def member(self, org_id: str, user_id: str) -> dict[str, Any]:
        """A member of the organisation (any status), as its document.

        :raises MemberNotFound: (404) no such user in ``org_id``.
        """
        doc = await self._repo.user(org_id, user_id)
        if doc is None:
            raise MemberNotFound()
        return doc

    async def change_role(self, org_id: str, user_id: str, role: str, *, by: str) -> UserOut:
        """Owner only (checked by the caller): make a member an admin or an admin a member; the owner's own role is
        fixed. A demotion revokes the user's sessions everywhere and the invites they sent that are still pending.
        Records ``user.role_changed`` (``by``: the acting user's id).

        :param role: ``admin`` or ``member``.
        :returns: the user after the change.
        :raises MemberNotFound: no such member in ``org_id``.
        :raises OwnerRoleFixed: (409) the target is the owner.
        """
        target = await self.member(org_id, user_id)
        if target["role"] == Role.OWNER.value:
            raise OwnerRoleFixed()
        demoted = target["role"] == Role.ADMIN.value and role == Role.MEMBER.value
        sids: list[str] = []
        async with self._outbox.transaction() as session:
            doc = await self._repo.set_role(org_id, user_id, role, session)
            if doc is None:
                raise MemberNotFound()
            if demoted:
                sids = await self._repo.revoke_user_sessions(org_id, user_id, "demoted", session)
                await self._repo.revoke_invites_by(org_id, user_id, session)
            await self._outbox.add(
                "user.role_changed",
                UserRoleChanged(user_id=user_id, org_id=org_id, role=role, changed_by=by),  # type: ignore[arg-type]
                org_id=org_id,
                subject=user_id,
                session=session,
            )
        if demoted:
            await self._sweep_and_announce(org_id, user_id, "demoted", sids)
        return user_out(doc)

    async def acting_member(self, org_id: str, user_id: str, *roles: str) -> dict[str, Any]:
        """The caller as the database knows them now, not as their token says. Routes that change anything call
        this, so a disabled or demoted user's authority ends with the change, not at their token's expiry.

        :param roles: the roles allowed (none: any).
        :returns: the caller's user document.
        :raises AccountInactive: (401) the caller is gone or disabled.
        :raises RoleRequired: (403) their current role is not one of ``roles``.
        """
        user = await self._repo.user(org_id, user_id)
        if user is None or user.get("status") != UserStatus.ACTIVE.value:
            raise AccountInactive()
        if roles and user.get("role") not in roles:
            raise RoleRequired(f"This needs one of the roles: {', '.join(roles)}")
        return user

    def check_can_manage(self, actor_role: str, actor_id: str, target: dict[str, Any]) -> None:
        """Owners manage everyone but themselves; admins manage members only.

        :param actor_role: the acting user's current role; ``target``: the member's document.
        :raises OwnAccount: (409) the target is the actor.
        :raises CannotManage: (403) the target is the owner, or an admin acts on an admin.
        """
        if target["_id"] == actor_id:
            raise OwnAccount()
        if target["role"] == Role.OWNER.value or (
            actor_role == Role.ADMIN.value and target["role"] != Role.MEMBER.value
        ):
            raise CannotManage()

    async def managed_member(self, org_id: str, actor_id: str, user_id: str) -> dict[str, Any]:
        """The member ``user_id`` whom the caller ``actor_id`` (an owner or admin now, per the database) may
        manage, as its document.

        :raises AccountInactive: (401) the caller is gone or disabled.
        :raises RoleRequired: (403) the caller is no longer an owner or admin.
        :raises MemberNotFound: (404) no such member in ``org_id``.
        :raises OwnAccount: (409) the target is the caller.
        :raises CannotManage: (403) the caller's role cannot manage the target.
        """
        actor = await self.acting_member(org_id, actor_id, *MANAGERS)
        target = await self.member(org_id, user_id)
        self.check_can_manage(actor["role"], actor_id, target)
        return target

    async def disable_member(self, org_id: str, actor_id: str, user_id: str) -> UserOut:
        """The caller disables a member they may manage (:meth:`managed_member`, whose errors it raises) with
        :meth:`disable`.

        :returns: the member after the change.
        """
        target = await self.managed_member(org_id, actor_id, user_id)
        return await self.disable(org_id, target["_id"], by=actor_id)

    async def reset_member_mfa(self, org_id: str, actor_id: str, user_id: str) -> UserOut:
        """The caller turns off the MFA of a member they may manage (:meth:`managed_member`, whose errors it
        raises); the member's sessions are revoked everywhere (:meth:`.mfa.MfaService.admin_reset`).

        :returns: the member after the change.
        :raises MfaNotOn: (409) the member's MFA is off.
        """
        target = await self.managed_member(org_id, actor_id, user_id)
        if not await self._mfa.admin_reset(org_id, target["_id"], by=actor_id):
            raise MfaNotOn("MFA is not on for this member")
        return await self.member_out(org_id, target["_id"])

    async def disable(self, org_id: str, user_id: str, *, by: str) -> UserOut:
        """Disable a user: their sessions are revoked (refresh at once, access tokens everywhere within 1 s) and the
        invites they sent that are still pending are revoked; ``user.disabled`` is recorded (``by``: the acting
        user's id). Disabling a disabled user changes nothing.

        :returns: the user after the change.
        :raises MemberNotFound: no such member in ``org_id``.
        """
        sids: list[str] = []
        async with self._outbox.transaction() as session:
            changed = await self._repo.disable_user(org_id, user_id, session)
            if changed:
                sids = await self._repo.revoke_user_sessions(org_id, user_id, "user-disabled", session)
                await self._repo.revoke_invites_by(org_id, user_id, session)
                await self._outbox.add(
                    "user.disabled",
                    UserDisabled(user_id=user_id, org_id=org_id, disabled_by=by),
                    org_id=org_id,
                    subject=user_id,
                    session=session,
                )
        if changed:
            await self._sweep_and_announce(org_id, user_id, "user-disabled", sids)
        return user_out(await self.member(org_id, user_id))

    async def _sweep_and_announce(
        self, org_id: str, user_id: str, reason: str, sids: list[str], *, keep: str | None = None
    ) -> None:
        """After the transaction that changed the user (and revoked the sessions it read) has committed: revoke
        again whatever session of theirs is still live, and push the union to every verifier.

        A log-in racing the change inserts its session and then re-reads the user (``SessionService.start``).
        Under a snapshot transaction the change's read of the sessions may miss that session while the log-in's
        re-read still sees the user unchanged (not yet committed), so neither revokes it. This sweep runs after
        the commit: a log-in that inserted before it is caught here, one that inserts after it reads the
        committed change and revokes itself."""
        late = await self._repo.revoke_user_sessions(org_id, user_id, reason, keep=keep)
        await self._sessions.announce(sids + [sid for sid in late if sid not in sids])

    async def member_out(self, org_id: str, user_id: str) -> UserOut:
        """A member of the organisation in its API shape.

        :raises MemberNotFound: no such member in ``org_id``.
        """
        return user_out(await self.member(org_id, user_id))
