"""HTTP views of the auth service: parse, call the services, map results. Every route is declared with its
models and rate limits, which also produce ``/api/v1/auth/openapi.json``."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from novapulse_runtime.errors import ErrorTable, Problem
from novapulse_runtime.paging import PageQuery, page
from novapulse_runtime.ratelimit import RateLimit, by_org, by_user, client_ip, client_key
from novapulse_runtime.roles import MANAGERS, Role
from novapulse_runtime.routes import Routes, json_response, path_id
from novapulse_runtime.tokens import principal, require_role

from .accounts import AccountService
from .constants import API_PREFIX, INVITE_RECIPIENT_WINDOW
from .errors import (
    AccountChangedDuringLogin,
    AccountInactive,
    AccountLocked,
    AlreadyMember,
    CannotManage,
    EmailTaken,
    InvalidChallenge,
    InvalidCredentials,
    InvalidInvite,
    InvalidRefreshToken,
    InvalidRegistrationLink,
    InviteNotFound,
    InviteNotPending,
    InviteOrganisationGone,
    MemberNotFound,
    MfaAlreadyOn,
    MfaNotOn,
    NoPendingMfaSetup,
    OneCodeRequired,
    OwnAccount,
    OwnerRoleFixed,
    RoleRequired,
    TooManyWrongCodes,
    UserNotFound,
    WeakPassword,
    WrongChallengeCode,
    WrongCode,
    WrongPassword,
    WrongPasswordOrCode,
)
from .invites import InviteService
from .mfa import MfaService
from .models import (
    AcceptInviteIn,
    AcceptInviteOut,
    InviteIn,
    InviteList,
    InviteListQuery,
    InviteOut,
    JwksOut,
    LoginIn,
    LoginOut,
    MemberList,
    MeOut,
    MfaCodeIn,
    MfaDisableIn,
    MfaSetupOut,
    MfaStatusOut,
    MfaVerifyIn,
    PasswordChangeIn,
    RecoveryCodesOut,
    RefreshIn,
    RegisterAcceptedOut,
    RegisterIn,
    RegisterOut,
    RegisterVerifiedOut,
    RegisterVerifyIn,
    RoleIn,
    TokenOut,
    UserOut,
)
from .registration import RegistrationService, normalised_address
from .sessions import SessionService
from .settings import AuthSettings
from .signing import KeyRing

_ID = re.compile(r"^[0-9a-f]{32}$")


PROBLEMS: ErrorTable = {
    # 400: a secret or token that does not check out
    WrongPassword: Problem(400),
    WrongCode: Problem(400),
    WrongPasswordOrCode: Problem(400),
    InvalidInvite: Problem(400),
    InviteOrganisationGone: Problem(400),
    InvalidRegistrationLink: Problem(400),
    # 401: the caller could not be identified (the runtime adds WWW-Authenticate)
    InvalidCredentials: Problem(401),
    AccountInactive: Problem(401),
    AccountChangedDuringLogin: Problem(401),
    InvalidRefreshToken: Problem(401),
    InvalidChallenge: Problem(401),
    WrongChallengeCode: Problem(401),
    # 403
    RoleRequired: Problem(403),
    CannotManage: Problem(403),
    # 404
    MemberNotFound: Problem(404),
    InviteNotFound: Problem(404),
    UserNotFound: Problem(404),
    # 409
    EmailTaken: Problem(409),
    AlreadyMember: Problem(409),
    OwnerRoleFixed: Problem(409),
    OwnAccount: Problem(409),
    InviteNotPending: Problem(409),
    MfaAlreadyOn: Problem(409),
    MfaNotOn: Problem(409),
    NoPendingMfaSetup: Problem(409),
    # 422: breaks a rule of the domain (WeakPassword carries ``errors`` like a validation error)
    WeakPassword: Problem(422),
    OneCodeRequired: Problem(422),
    # 429: with Retry-After (seconds)
    AccountLocked: Problem(429),
    TooManyWrongCodes: Problem(429),
}
"""How each domain error of :mod:`.errors` is answered (RFC 9457 problem; title: the status phrase)."""


def build_routes(
    settings: AuthSettings,
    *,
    accounts: AccountService,
    sessions: SessionService,
    invites: InviteService,
    mfa: MfaService,
    keys: KeyRing,
    registration: RegistrationService,
) -> Routes:
    routes = Routes(prefix=API_PREFIX, tags=["auth"], problems=PROBLEMS)

    def ip(request: web.Request) -> str:
        return client_ip(request, settings.trusted_proxies)

    def client(request: web.Request) -> str:
        """The client identity per-client limits and lockouts are keyed on (IPv6: its network)."""
        return client_key(request, settings.trusted_proxies, settings.rate_limit_ipv6_prefix)

    async def challenge_user(_request: web.Request, body: Any) -> str | None:
        return await mfa.challenge_user(body.mfa_token)

    # --- accounts and tokens -----------------------------------------------------------------------------

    def register_email(_request: web.Request, body: Any) -> str:
        return normalised_address(str(body.email))

    @routes.post(
        "/register",
        body=RegisterIn,
        response=RegisterAcceptedOut,
        status=202,
        errors=(409,),
        rate_limits=[
            RateLimit("register-ip", settings.register_ip_limit, 3600),
            RateLimit("register-email", settings.register_email_limit, 3600, key=register_email),
        ],
    )
    async def register(request: web.Request, body: RegisterIn) -> RegisterAcceptedOut | web.Response:
        """Register: 202 and a verification link by mail, the same answer for a registered address (whose owner
        is told by mail). With REGISTRATION_EMAIL_VERIFICATION=false: 201 {user, organization} or 409."""
        if settings.registration_email_verification:
            await registration.request(body.email, body.password, body.name, body.organization, ip(request))
            return RegisterAcceptedOut(expires_in=registration.ttl)
        user, org = await accounts.register(body.email, body.password, body.name, body.organization)
        return json_response(RegisterOut(user=user, organization=org), 201)

    @routes.post(
        "/register/verify",
        body=RegisterVerifyIn,
        response=RegisterVerifiedOut,
        status=201,
        errors=(400, 409),
        rate_limits=[RateLimit("register-verify-ip", settings.register_ip_limit, 3600)],
    )
    async def register_verify(request: web.Request, body: RegisterVerifyIn) -> RegisterVerifiedOut:
        """Complete a registration with the token from the mail and the password given at registration: the
        organisation and its owner are created and signed in. A wrong password answers like an unknown token."""
        user, org, pair = await registration.verify(body.token, body.password)
        tokens = TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)
        return RegisterVerifiedOut(user=user, organization=org, tokens=tokens)

    @routes.post(
        "/login",
        body=LoginIn,
        response=LoginOut,
        errors=(401, 429),
        rate_limits=[RateLimit("login-ip", settings.login_ip_limit, 60)],
    )
    async def login(request: web.Request, body: LoginIn) -> LoginOut:
        """Log in: tokens, or an MFA challenge when the account has MFA on. Wrong passwords block the client
        for this account (429), and past a per-account ceiling every client that never signed in to it."""
        return LoginOut(await accounts.login(body.email, body.password, ip(request), client(request)))

    @routes.post(
        "/refresh",
        body=RefreshIn,
        response=TokenOut,
        errors=(401,),
        rate_limits=[RateLimit("refresh-ip", settings.refresh_ip_limit, 60)],
    )
    async def refresh(request: web.Request, body: RefreshIn) -> TokenOut:
        """Rotate a refresh token for a new pair (reuse of a spent token revokes its family)."""
        pair = await sessions.refresh(body.refresh_token)
        return TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)

    @routes.post("/logout", auth=True)
    async def logout(request: web.Request) -> None:
        """Revoke the current session: its refresh token at once, its access tokens in every service within 1 s."""
        who = principal(request)
        await sessions.logout(who.session_id, who.user_id)

    @routes.post(
        "/password",
        body=PasswordChangeIn,
        auth=True,
        errors=(400,),
        rate_limits=[RateLimit("password-user", settings.login_account_limit, 300, key=by_user)],
    )
    async def change_password(request: web.Request, body: PasswordChangeIn) -> None:
        """Change your password; your other sessions are revoked."""
        who = principal(request)
        await accounts.change_password(
            who.org_id, who.user_id, body.current_password, body.new_password, keep_sid=who.session_id
        )

    @routes.get("/me", response=MeOut, auth=True)
    async def me(request: web.Request) -> MeOut:
        """The caller and their organisation."""
        who = principal(request)
        user, org = await accounts.profile(who.org_id, who.user_id)
        return MeOut(user=user, organization=org, amr=list(who.amr))

    @routes.get("/.well-known/jwks.json", response=JwksOut)
    async def jwks(request: web.Request) -> web.Response:
        """The public signing keys (current and previous)."""
        await keys.refresh(max_age=2.0)
        return web.json_response(keys.jwks(), headers={"Cache-Control": "public, max-age=60"})

    # --- invites -----------------------------------------------------------------------------------------

    # Invitation budgets are spent only by those allowed to invite (a member's refused call must not use up
    # the organisation's budget), per organisation and per recipient mailbox across all organisations (so
    # nobody can flood an address with invitations, whatever organisations they register).
    def invite_org(request: web.Request, _body: Any) -> str | None:
        return by_org(request, _body) if principal(request).role in MANAGERS else None

    def invite_to(request: web.Request, body: Any) -> str | None:
        return normalised_address(str(body.email)) if principal(request).role in MANAGERS else None

    @routes.post(
        "/invites",
        body=InviteIn,
        response=InviteOut,
        status=201,
        auth=True,
        errors=(409,),
        rate_limits=[
            RateLimit("invite-org", settings.invite_org_limit, 3600, key=invite_org),
            RateLimit("invite-recipient", settings.invite_recipient_limit, INVITE_RECIPIENT_WINDOW, key=invite_to),
        ],
    )
    async def create_invite(request: web.Request, body: InviteIn) -> InviteOut:
        """Invite someone to the organisation (owner or admin)."""
        who = require_role(request, *MANAGERS)
        await accounts.acting_member(who.org_id, who.user_id, *MANAGERS)  # current role, not the token's
        return await invites.create(who.org_id, who.user_id, body.email, body.role)

    @routes.get("/invites", query=InviteListQuery, response=InviteList, auth=True)
    async def list_invites(request: web.Request, query: InviteListQuery) -> InviteList:
        """The organisation's invites, newest first (owner or admin)."""
        who = require_role(request, *MANAGERS)
        found = await invites.list(who.org_id, query.status, query.after, query.fetch)
        items, cursor = page(found, query.limit, key=lambda invite: invite.id)
        return InviteList(items=items, next_cursor=cursor)

    @routes.delete("/invites/{invite_id}", response=InviteOut, auth=True, errors=(404, 409))
    async def revoke_invite(request: web.Request) -> InviteOut:
        """Revoke a pending invite (owner or admin)."""
        who = require_role(request, *MANAGERS)
        await accounts.acting_member(who.org_id, who.user_id, *MANAGERS)
        return await invites.revoke(who.org_id, path_id(request, "invite_id", _ID))

    @routes.post(
        "/invites/accept",
        body=AcceptInviteIn,
        response=AcceptInviteOut,
        status=201,
        errors=(409,),
        rate_limits=[RateLimit("accept-ip", settings.register_ip_limit, 3600)],
    )
    async def accept_invite(request: web.Request, body: AcceptInviteIn) -> AcceptInviteOut:
        """Accept an invite: create the account inside the inviting organisation."""
        user, org = await invites.accept(body.token, body.name, body.password)
        return AcceptInviteOut(user=user, organization=org)

    # --- members -----------------------------------------------------------------------------------------

    @routes.get("/members", query=PageQuery, response=MemberList, auth=True)
    async def list_members(request: web.Request, query: PageQuery) -> MemberList:
        """The members of the caller's organisation, by id, one page at a time (``cursor``: the ``next_cursor``
        of the previous page)."""
        who = principal(request)
        items, next_cursor = await accounts.members(who.org_id, query)
        return MemberList(items=items, next_cursor=next_cursor)

    @routes.patch("/members/{user_id}", body=RoleIn, response=UserOut, auth=True, errors=(404, 409))
    async def change_role(request: web.Request, body: RoleIn) -> UserOut:
        """Change a member's role (owner only); demoting an admin revokes their sessions and pending invites."""
        who = require_role(request, Role.OWNER.value)
        await accounts.acting_member(who.org_id, who.user_id, Role.OWNER.value)
        return await accounts.change_role(who.org_id, path_id(request, "user_id", _ID), body.role, by=who.user_id)

    @routes.post("/members/{user_id}/disable", response=UserOut, auth=True, errors=(404, 409))
    async def disable_member(request: web.Request) -> UserOut:
        """Disable a member, revoke their sessions and pending invites (owner, or admin for members)."""
        who = require_role(request, *MANAGERS)
        return await accounts.disable_member(who.org_id, who.user_id, path_id(request, "user_id", _ID))

    @routes.post("/members/{user_id}/mfa/reset", response=UserOut, auth=True, errors=(404, 409))
    async def reset_member_mfa(request: web.Request) -> UserOut:
        """Turn a member's MFA off so they can set it up again (owner, or admin for members)."""
        who = require_role(request, *MANAGERS)
        return await accounts.reset_member_mfa(who.org_id, who.user_id, path_id(request, "user_id", _ID))

    # --- MFA ---------------------------------------------------------------------------------------------

    # the signed-in routes that check a TOTP code (enable, disable, recovery codes) get a per-user budget of
    # their own, the same size as /mfa/verify's, so guesses there are bounded as well
    mfa_code_user = RateLimit("mfa-code-user", settings.mfa_verify_user_limit, 300, key=by_user)

    @routes.get("/mfa", response=MfaStatusOut, auth=True, errors=(404,))
    async def mfa_status(request: web.Request) -> MfaStatusOut:
        """Whether the caller's MFA is on and how many unused recovery codes they have left."""
        who = principal(request)
        enabled, remaining = await mfa.status(who.org_id, who.user_id)
        return MfaStatusOut(enabled=enabled, recovery_codes_remaining=remaining)

    @routes.post("/mfa/setup", response=MfaSetupOut, auth=True, errors=(409,))
    async def mfa_setup(request: web.Request) -> MfaSetupOut:
        """Start TOTP set-up: a pending secret, its otpauth URI and QR codes (valid 10 minutes)."""
        who = principal(request)
        return await mfa.setup(who.org_id, who.user_id)

    @routes.post(
        "/mfa/enable", body=MfaCodeIn, response=RecoveryCodesOut, auth=True, errors=(409,), rate_limits=[mfa_code_user]
    )
    async def mfa_enable(request: web.Request, body: MfaCodeIn) -> RecoveryCodesOut:
        """Confirm set-up with a code; returns 10 recovery codes, shown once."""
        who = principal(request)
        return RecoveryCodesOut(recovery_codes=await mfa.enable(who.org_id, who.user_id, body.code))

    @routes.post(
        "/mfa/verify",
        body=MfaVerifyIn,
        response=TokenOut,
        errors=(401,),
        rate_limits=[
            RateLimit("mfa-verify-ip", settings.mfa_verify_ip_limit, 60),
            RateLimit("mfa-verify-user", settings.mfa_verify_user_limit, 300, key=challenge_user),
        ],
    )
    async def mfa_verify(request: web.Request, body: MfaVerifyIn) -> TokenOut:
        """Answer a log-in MFA challenge with a TOTP code or a recovery code."""
        pair = await mfa.verify(body.mfa_token, body.code, body.recovery_code, ip(request), client(request))
        return TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)

    @routes.post("/mfa/disable", body=MfaDisableIn, auth=True, errors=(409,), rate_limits=[mfa_code_user])
    async def mfa_disable(request: web.Request, body: MfaDisableIn) -> None:
        """Turn MFA off (password and a current code)."""
        who = principal(request)
        await mfa.disable(who.org_id, who.user_id, body.password, body.code)

    @routes.post(
        "/mfa/recovery-codes",
        body=MfaCodeIn,
        response=RecoveryCodesOut,
        auth=True,
        errors=(409,),
        rate_limits=[mfa_code_user],
    )
    async def mfa_recovery_codes(request: web.Request, body: MfaCodeIn) -> RecoveryCodesOut:
        """Replace the recovery codes (the old ones stop working)."""
        who = principal(request)
        return RecoveryCodesOut(recovery_codes=await mfa.regenerate(who.org_id, who.user_id, body.code))

    return routes
