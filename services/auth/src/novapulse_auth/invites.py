"""Invitations: an owner or admin invites an e-mail address; the invitee accepts with a single-use,
expiring token (stored hashed) that only the notification service ever sees, in a private command event."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from novapulse_runtime.catalog.auth import InviteAccepted, InviteDeliveryRequested, UserInvited
from novapulse_runtime.roles import MANAGERS

from .accounts import check_password, org_out, user_out
from .constants import INVITE_TOKEN_PREFIX, UserStatus
from .errors import (
    AccountInactive,
    AlreadyMember,
    AuthError,
    EmailTaken,
    InvalidInvite,
    InviteNotFound,
    InviteNotPending,
    InviteOrganisationGone,
)
from .models import InviteOut, OrgOut, UserOut
from .opaque import new_token, token_hash
from .passwords import PasswordHashing
from .ports import Outbox
from .repository import EmailInUse, Repository, invite_doc, user_doc


def invite_out(doc: dict[str, Any]) -> InviteOut:
    """The API shape of an invite document (``InviteOut``): never its token or the token's hash."""
    return InviteOut(
        id=doc["_id"],
        email=doc["email"],
        role=doc["role"],
        status=doc["status"],
        invited_by=doc["invited_by"],
        expires_at=doc["expires_at"],
        created_at=doc["created_at"],
    )


class InviteService:
    """Invitations: owners and admins invite an address with a role; the invitee accepts with the token mailed to
    them (256 random bits, stored as SHA-256 only, single use, expiring after ``ttl`` seconds).
    """

    def __init__(
        self, repo: Repository, passwords: PasswordHashing, outbox: Outbox, *, ttl: int, accept_url: str
    ) -> None:
        """:param ttl: seconds an invite stays valid (``INVITE_TTL``).
        :param accept_url: the page the mailed link opens; the token is added as ``?token=``.
        """
        self._repo = repo
        self._passwords = passwords
        self._outbox = outbox
        self._ttl = ttl
        self._accept_url = accept_url

    async def create(self, org_id: str, inviter_id: str, email: str, role: str) -> InviteOut:
        """Invite ``email`` into ``org_id`` with ``role`` (``admin`` or ``member``), on behalf of ``inviter_id`` (a
        manager, checked by the caller). An earlier pending invite of the same address is revoked (one live invite
        per address). Records ``user.invited`` and the private ``invite.delivery_requested`` (token and link, for
        the notification service only) in one transaction.

        Only this organisation's own members are refused: answering "has an account" for any address would let an
        admin probe the whole platform's users. An address registered elsewhere gets the invitation like anyone;
        accepting it is refused to the owner of that address only.

        :param email: normalised here (stripped, lower case).
        :returns: the new invite.
        :raises AlreadyMember: (409) the address is a member of this organisation.
        :raises AccountInactive: (401) the inviter or the organisation no longer exists.
        """
        email = email.strip().lower()
        # Only this organisation's own members are refused here: answering "has an account" for any address
        # would let an admin probe the whole platform's users. An address registered elsewhere gets the
        # invitation like anyone; accepting it is refused (409) to the owner of that address only.
        if await self._repo.member_with_email(org_id, email):
            raise AlreadyMember()
        inviter = await self._repo.user(org_id, inviter_id)
        org = await self._repo.org(org_id)
        if inviter is None or org is None:
            raise AccountInactive("The account no longer exists")
        token = new_token(INVITE_TOKEN_PREFIX)
        doc = invite_doc(
            org_id=org_id, email=email, role=role, token_hash=token_hash(token), invited_by=inviter_id, ttl=self._ttl
        )
        invite_id, expires_at = doc["_id"], doc["expires_at"]
        link = f"{self._accept_url}?{urlencode({'token': token})}"
        async with self._outbox.transaction() as session:
            await self._repo.revoke_pending_invites(org_id, email, session)  # one live invite per address
            await self._repo.insert_invite(doc, session)
            await self._outbox.add(
                "user.invited",
                UserInvited(
                    invite_id=invite_id,
                    org_id=org_id,
                    email=email,
                    role=role,  # type: ignore[arg-type]
                    invited_by=inviter_id,
                    expires_at=expires_at,
                ),
                org_id=org_id,
                subject=invite_id,
                session=session,
            )
            await self._outbox.add(
                "invite.delivery_requested",
                InviteDeliveryRequested(
                    invite_id=invite_id,
                    org_id=org_id,
                    email=email,
                    role=role,  # type: ignore[arg-type]
                    token=token,
                    accept_url=link,
                    inviter_name=inviter["name"],
                    organization=org["name"],
                    expires_at=expires_at,
                ),
                org_id=org_id,
                subject=invite_id,
                session=session,
            )
        return invite_out(doc)

    async def list(self, org_id: str, status: str | None, after: str | None, count: int) -> list[InviteOut]:
        """Up to ``count`` of the organisation's invites, newest first, optionally only those with ``status``,
        after the invite id ``after`` (a page read with ``limit + 1``, :mod:`novapulse_runtime.paging`)."""
        return [invite_out(d) for d in await self._repo.invites_of(org_id, status, after, count)]

    async def revoke(self, org_id: str, invite_id: str) -> InviteOut:
        """Revoke a pending invite of the organisation.

        :returns: the invite after the change.
        :raises InviteNotFound: (404) no such invite in ``org_id``.
        :raises InviteNotPending: (409) it was already accepted or revoked.
        """
        doc = await self._repo.revoke_invite(org_id, invite_id)
        if doc is None:
            existing = await self._repo.invite(org_id, invite_id)
            if existing is None:
                raise InviteNotFound()
            raise InviteNotPending(f"The invite is already {existing['status']}")
        return invite_out(doc)

    async def accept(self, token: str, name: str, password: str) -> tuple[UserOut, OrgOut]:
        """The invitee joins the organisation with the invited role; the token is spent. An invite carries its
        sender's authority: when the inviter is gone, disabled or no longer a manager, the invite (and their other
        pending ones) is revoked. A mistake the invitee can fix (a weak password), a database error or a cancelled
        request gives the invite back. Records ``invite.accepted``.

        :param token: the token from the mail (``inv_`` + 43 characters).
        :returns: the new user and their organisation.
        :raises InvalidInvite: (400) unknown, expired, revoked or used token, or its inviter lost the right.
        :raises WeakPassword: (422) the password breaks the policy.
        :raises EmailTaken: (409) the address already has an account.
        :raises InviteOrganisationGone: (400) the organisation no longer exists.
        """
        invite = await self._repo.claim_invite(token_hash(token))
        if invite is None:
            raise InvalidInvite()
        # An invite carries its sender's authority: disabling or demoting them revokes their pending invites,
        # and this check closes the race with an acceptance already under way.
        inviter = await self._repo.user(invite["org_id"], invite["invited_by"])
        if inviter is None or inviter.get("status") != UserStatus.ACTIVE.value or inviter.get("role") not in MANAGERS:
            await self._repo.revoke_invites_by(invite["org_id"], invite["invited_by"])
            await self._repo.revoke_claimed_invite(invite["_id"])
            raise InvalidInvite()
        try:
            check_password(password, email=invite["email"], name=name)
            if await self._repo.email_taken(invite["email"]):
                raise EmailTaken("This e-mail address already has an account")
            hashed = await self._passwords.hash(password)
            user = user_doc(
                email=invite["email"], name=name, org_id=invite["org_id"], role=invite["role"], password_hash=hashed
            )
            org = await self._repo.org(invite["org_id"])
            if org is None:
                raise InviteOrganisationGone()
            async with self._outbox.transaction() as session:
                await self._repo.insert_user(user, session)
                await self._repo.mark_invite_accepted_by(invite["_id"], user["_id"], session)
                await self._outbox.add(
                    "invite.accepted",
                    InviteAccepted(
                        invite_id=invite["_id"],
                        org_id=invite["org_id"],
                        user_id=user["_id"],
                        email=invite["email"],
                        name=name,
                        role=invite["role"],
                        invited_by=invite["invited_by"],
                    ),
                    org_id=invite["org_id"],
                    subject=user["_id"],
                    session=session,
                )
        except EmailInUse as exc:
            await self._repo.release_invite(invite["_id"])
            raise EmailTaken("This e-mail address already has an account") from exc
        except AuthError:
            await self._repo.release_invite(invite["_id"])  # a fixable mistake must not burn the invite
            raise
        except (Exception, asyncio.CancelledError):
            await self._repo.release_invite(invite["_id"])  # nor may a database error or a cancelled request
            raise
        return user_out(user), org_out(org)
