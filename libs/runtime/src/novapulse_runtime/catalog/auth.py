"""Events produced by the auth service (stream ``<namespace>:events:auth``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from .registry import EventData, EventType

Role = Literal["owner", "admin", "member"]


class UserRegistered(EventData):
    """A person registered and became the owner of a new organisation."""

    user_id: str
    org_id: str
    email: str
    name: str
    role: Role
    organization: str


class UserInvited(EventData):
    """An owner or admin invited someone to the organisation (no token: see invite.delivery_requested)."""

    invite_id: str
    org_id: str
    email: str
    role: Role
    invited_by: str
    expires_at: datetime


class InviteDeliveryRequested(EventData):
    """Private command to the notification service: mail this accept link. Never delivered to customers."""

    invite_id: str
    org_id: str
    email: str
    role: Role
    token: str
    accept_url: str = ""
    """The accept link (carries the token); empty from producers older than this field."""
    inviter_name: str
    organization: str
    expires_at: datetime


class InviteAccepted(EventData):
    """An invitee accepted and joined the organisation."""

    invite_id: str
    org_id: str
    user_id: str
    email: str
    name: str
    role: Role
    invited_by: str


class UserRoleChanged(EventData):
    """A member's role changed."""

    user_id: str
    org_id: str
    role: Role
    changed_by: str


class UserDisabled(EventData):
    """A user was disabled; their sessions were revoked."""

    user_id: str
    org_id: str
    disabled_by: str


class PasswordChanged(EventData):
    """A user's password changed."""

    user_id: str
    org_id: str


class MfaEnabled(EventData):
    """A user turned on TOTP multi-factor authentication."""

    user_id: str
    org_id: str


class MfaDisabled(EventData):
    """A user's MFA was turned off (by the user, or reset by an admin)."""

    user_id: str
    org_id: str
    by: str


class MfaRecoveryCodeUsed(EventData):
    """A recovery code was used to log in."""

    user_id: str
    org_id: str
    remaining: int


class MfaChallengeFailed(EventData):
    """Security event: the password was right but the second factor was wrong."""

    user_id: str
    org_id: str
    ip: str
    attempts: int


class RegistrationAttempted(EventData):
    """Security notice: someone tried to register an address that already has an account. The answer to the
    caller was the same as for a new address (no enumeration); the owner of the address is told by mail."""

    user_id: str
    org_id: str
    ip: str


class VerificationRequested(EventData):
    """Private command to the notification service: mail this address the link that completes a
    registration (carries a one-time token; never delivered to customers). No organisation exists yet, so
    the envelope's ``org_id`` is empty."""

    email: str
    name: str
    organization: str
    token: str
    verify_url: str = ""
    """The verification link (carries the token), when the auth service is configured to build it."""
    expires_at: datetime


class LoginBlocked(EventData):
    """Security event: sign-in to this account was blocked after repeated wrong passwords.

    ``scope`` is ``client`` when only the failing client (address or /64 network) is held back, ``account``
    when the per-account ceiling was reached; ``retry_after_s`` is how long the block lasts, in seconds.
    """

    user_id: str
    org_id: str
    ip: str
    failures: int
    scope: Literal["client", "account"]
    retry_after_s: int


SOURCE = "auth"
EVENTS = (
    EventType("user.registered", UserRegistered, source=SOURCE, public=True),
    EventType("user.invited", UserInvited, source=SOURCE, public=True),
    EventType("invite.delivery_requested", InviteDeliveryRequested, source=SOURCE, public=False),
    EventType("invite.accepted", InviteAccepted, source=SOURCE, public=True),
    EventType("user.role_changed", UserRoleChanged, source=SOURCE, public=True),
    EventType("user.disabled", UserDisabled, source=SOURCE, public=True),
    EventType("user.password_changed", PasswordChanged, source=SOURCE, public=True),
    EventType("mfa.enabled", MfaEnabled, source=SOURCE, public=True),
    EventType("mfa.disabled", MfaDisabled, source=SOURCE, public=True),
    EventType("mfa.recovery_code_used", MfaRecoveryCodeUsed, source=SOURCE, public=True),
    EventType("mfa.challenge_failed", MfaChallengeFailed, source=SOURCE, public=True),
    EventType("user.registration_attempted", RegistrationAttempted, source=SOURCE, public=False),
    EventType("registration.verification_requested", VerificationRequested, source=SOURCE, public=False),
    EventType("user.login_blocked", LoginBlocked, source=SOURCE, public=True),
)
"""The types this service produces (registered in :data:`~novapulse_runtime.catalog.CATALOG`)."""
