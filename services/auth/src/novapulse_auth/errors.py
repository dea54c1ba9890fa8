"""Domain errors of the auth service: what its use cases raise, in the domain's words.

Each class has the sentence the caller is told as its default ``detail`` (a raise site may give a more
precise one). How each is answered over HTTP (status, title) is decided in one place only: the ``PROBLEMS``
table of :mod:`.api`; the service layer knows no HTTP.
"""

from __future__ import annotations

from typing import Any, ClassVar

from novapulse_runtime.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    LimitReached,
    NotFound,
    Rejected,
    Unauthenticated,
)


class AuthError(DomainError):
    """Base of the auth service's domain errors: ``detail`` defaults to the class's :attr:`said`."""

    said: ClassVar[str] = ""

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.said, **extra)


# --- passwords and credentials -------------------------------------------------------------------------------


class WeakPassword(AuthError, Invalid):
    """A new password breaks the password policy (:func:`.passwords.password_problem`); ``errors`` lists the
    field error (``location``, ``field``, ``message``, ``type``) as a validation error would."""


class InvalidCredentials(AuthError, Unauthenticated):
    """Log-in with an unknown e-mail, a wrong password or a disabled account (one answer for all three)."""

    said = "Invalid e-mail or password"


class WrongPassword(AuthError, Rejected):
    """The current password given to change it is wrong."""

    said = "The current password is wrong"


class AccountInactive(AuthError, Unauthenticated):
    """The caller's account (from a valid token) no longer exists or is disabled."""

    said = "The account no longer exists or is disabled"


class AccountChangedDuringLogin(AuthError, Unauthenticated):
    """The user was disabled, demoted or changed password while their log-in was under way."""

    said = "The account changed during log-in; log in again"


class AccountLocked(AuthError, LimitReached):
    """Too many wrong passwords for this account from this client (or from unknown clients); ``retry_after``
    is the seconds until the block ends."""

    said = "Too many failed sign-ins from here; retry later"


# --- accounts and members ------------------------------------------------------------------------------------


class EmailTaken(AuthError, Conflict):
    """An account with this e-mail address already exists (addresses are unique across organisations)."""

    said = "An account with this e-mail already exists"


class MemberNotFound(AuthError, NotFound):
    """No such member in the caller's organisation."""

    said = "No such member in your organisation"


class OwnerRoleFixed(AuthError, Conflict):
    """The owner's role cannot change."""

    said = "The owner's role cannot change"


class RoleRequired(AuthError, Forbidden):
    """The caller's current role (as stored, not as the token says) is not one the action needs."""

    said = "This needs another role"


class OwnAccount(AuthError, Conflict):
    """A manager acting on their own account (disable, MFA reset)."""

    said = "You cannot do this to your own account"


class CannotManage(AuthError, Forbidden):
    """The caller's role cannot manage the target (admins manage members only; nobody manages the owner)."""

    said = "Your role cannot manage this member"


# --- invites -----------------------------------------------------------------------------------------------


class AlreadyMember(AuthError, Conflict):
    """The invited address is already a member of this organisation."""

    said = "This e-mail address is already a member of this organisation"


class InviteNotFound(AuthError, NotFound):
    """No such invite in the caller's organisation."""

    said = "No such invite in your organisation"


class InviteNotPending(AuthError, Conflict):
    """The invite was already accepted or revoked."""

    said = "The invite is no longer pending"


class InvalidInvite(AuthError, Rejected):
    """The invite token is unknown, expired, revoked or already used (one answer for all)."""

    said = "The invite is invalid, expired, revoked or already used"


class InviteOrganisationGone(AuthError, Rejected):
    """The organisation of the invite no longer exists."""

    said = "The organisation no longer exists"


# --- registration ------------------------------------------------------------------------------------------


class InvalidRegistrationLink(AuthError, Rejected):
    """The registration token is unknown, expired, void or used, or the password does not match (one answer)."""

    said = "The verification link is invalid, expired or already used"


# --- MFA ---------------------------------------------------------------------------------------------------


class UserNotFound(AuthError, NotFound):
    """The user is gone or disabled (MFA routes of a signed-in user)."""

    said = "No such user"


class MfaAlreadyOn(AuthError, Conflict):
    """MFA is already on for this user."""

    said = "MFA is already on"


class MfaNotOn(AuthError, Conflict):
    """MFA is not on for this user."""

    said = "MFA is not on"


class NoPendingMfaSetup(AuthError, Conflict):
    """``/mfa/enable`` without a pending set-up (none, or it expired)."""

    said = "No pending MFA set-up (or it expired); call /mfa/setup first"


class WrongCode(AuthError, Rejected):
    """A TOTP code (or recovery code) of a signed-in route is wrong or was already used (RFC 6238 §5.2)."""

    said = "The code is wrong or was already used"


class WrongPasswordOrCode(AuthError, Rejected):
    """Turning MFA off: the password or the code is wrong (not said which)."""

    said = "The password or the code is wrong"


class TooManyWrongCodes(AuthError, LimitReached):
    """The user's wrong-code budget is spent; ``retry_after`` is the seconds until its window ends."""

    said = "Too many wrong codes for this account; retry later"


class OneCodeRequired(AuthError, Invalid):
    """An MFA challenge answer must carry exactly one of ``code`` and ``recovery_code``."""

    said = "Send exactly one of code or recovery_code"


class InvalidChallenge(AuthError, Unauthenticated):
    """The MFA token is unknown, expired, used up, or its user can no longer sign in."""

    said = "The MFA token is invalid, expired or already used"


class WrongChallengeCode(AuthError, Unauthenticated):
    """A wrong code answering an MFA challenge that is still alive."""

    said = "The code is wrong or was already used"


# --- sessions ----------------------------------------------------------------------------------------------


class InvalidRefreshToken(AuthError, Unauthenticated):
    """The refresh token is unknown, expired, spent or its session revoked (one answer for all)."""

    said = "The refresh token is invalid, expired or revoked"
