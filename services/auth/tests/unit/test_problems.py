"""The auth service's domain errors answer with the same problems as the ProblemErrors they replaced."""

from __future__ import annotations

import inspect
from http import HTTPStatus
from typing import Any

import pytest

from novapulse_auth import errors
from novapulse_auth.api import PROBLEMS
from novapulse_auth.errors import AuthError
from novapulse_runtime.errors import DomainError, to_problem


def test_every_domain_error_has_its_problem() -> None:
    classes = {c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, AuthError)} - {AuthError}
    assert classes == set(PROBLEMS)


BEFORE: list[tuple[DomainError, int, str, dict[str, Any]]] = [
    (errors.EmailTaken(), 409, "An account with this e-mail already exists", {}),
    (errors.InvalidCredentials(), 401, "Invalid e-mail or password", {}),
    (errors.AccountInactive(), 401, "The account no longer exists or is disabled", {}),
    (errors.WrongPassword(), 400, "The current password is wrong", {}),
    (errors.MemberNotFound(), 404, "No such member in your organisation", {}),
    (errors.OwnerRoleFixed(), 409, "The owner's role cannot change", {}),
    (errors.RoleRequired("This needs one of the roles: owner"), 403, "This needs one of the roles: owner", {}),
    (errors.OwnAccount(), 409, "You cannot do this to your own account", {}),
    (errors.CannotManage(), 403, "Your role cannot manage this member", {}),
    (errors.AlreadyMember(), 409, "This e-mail address is already a member of this organisation", {}),
    (errors.InviteNotFound(), 404, "No such invite in your organisation", {}),
    (errors.InviteNotPending("The invite is already revoked"), 409, "The invite is already revoked", {}),
    (errors.InvalidInvite(), 400, "The invite is invalid, expired, revoked or already used", {}),
    (errors.InviteOrganisationGone(), 400, "The organisation no longer exists", {}),
    (errors.InvalidRegistrationLink(), 400, "The verification link is invalid, expired or already used", {}),
    (errors.UserNotFound(), 404, "No such user", {}),
    (errors.MfaAlreadyOn(), 409, "MFA is already on", {}),
    (errors.MfaNotOn(), 409, "MFA is not on", {}),
    (errors.NoPendingMfaSetup(), 409, "No pending MFA set-up (or it expired); call /mfa/setup first", {}),
    (errors.WrongCode(), 400, "The code is wrong or was already used", {}),
    (errors.WrongPasswordOrCode(), 400, "The password or the code is wrong", {}),
    (errors.OneCodeRequired(), 422, "Send exactly one of code or recovery_code", {}),
    (errors.InvalidChallenge(), 401, "The MFA token is invalid, expired or already used", {}),
    (errors.WrongChallengeCode(), 401, "The code is wrong or was already used", {}),
    (errors.InvalidRefreshToken(), 401, "The refresh token is invalid, expired or revoked", {}),
    (errors.AccountChangedDuringLogin(), 401, "The account changed during log-in; log in again", {}),
    (
        errors.AccountLocked(retry_after=7),
        429,
        "Too many failed sign-ins from here; retry later",
        {"Retry-After": "7"},
    ),
    (
        errors.TooManyWrongCodes(retry_after=60),
        429,
        "Too many wrong codes for this account; retry later",
        {"Retry-After": "60"},
    ),
]


@pytest.mark.parametrize(("error", "status", "detail", "headers"), BEFORE, ids=lambda v: type(v).__name__)
def test_problem_is_unchanged(error: DomainError, status: int, detail: str, headers: dict[str, str]) -> None:
    problem = to_problem(error, PROBLEMS)
    assert (problem.status, problem.detail, problem.title, problem.type) == (
        status,
        detail,
        HTTPStatus(status).phrase,
        "about:blank",
    )
    for name, value in headers.items():
        assert problem.headers[name] == value
    assert problem.extra == {}


def test_weak_password_carries_its_field_error() -> None:
    problem = to_problem(errors.WeakPassword("too short", errors=[{"field": "password"}]), PROBLEMS)
    assert (problem.status, problem.detail, problem.extra) == (422, "too short", {"errors": [{"field": "password"}]})
