"""Request and response bodies of the auth API (they also generate its OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, RootModel, StringConstraints, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from novapulse_runtime.paging import PageQuery

from .constants import EMAIL_MAX, NAME_MAX, ORG_NAME_MAX, PASSWORD_MAX

_SPECIAL_USE = "|".join(
    "".join(f"[{c.upper()}{c}]" for c in n) for n in ("arpa", "invalid", "local", "localhost", "onion", "test")
)
Email = Annotated[
    EmailStr,
    Field(max_length=EMAIL_MAX),
    # email-validator refuses special-use domains (RFC 6761: .test, .localhost, ...); the schema says so too
    WithJsonSchema(
        {
            "type": "string",
            "format": "email",
            "maxLength": EMAIL_MAX,
            "pattern": rf"^(?![\s\S]*[@.](?:{_SPECIAL_USE})\.?$)",
        }
    ),
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX)]
# Length is checked again (with a clear message) by the password policy; this bound keeps hashing cheap.
Password = Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX * 4)]
TotpCode = Annotated[str, Field(pattern=r"^[0-9]{6}$", description="6 ASCII digits")]
RecoveryCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9 -]{10,16}$")]
OpaqueToken = Annotated[str, Field(min_length=1, max_length=256)]
InvitableRole = Literal["admin", "member"]
RoleName = Literal["owner", "admin", "member"]


class StrictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterIn(StrictIn):
    email: Email
    password: Password
    name: Name
    organization: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=ORG_NAME_MAX)]


class RegisterAcceptedOut(BaseModel):
    """The same for a new and a registered address: the next step happens in the mailbox."""

    status: Literal["verification_pending"] = "verification_pending"
    detail: str = "If this address can be registered, a link to complete the registration has been sent to it."
    expires_in: int = Field(description="seconds the link stays valid")


class RegisterVerifyIn(StrictIn):
    """The mailed token and the password given at ``/register``: the link alone creates nothing."""

    token: OpaqueToken
    password: Password


class LoginIn(StrictIn):
    email: Email
    password: Password


class PasswordChangeIn(StrictIn):
    current_password: Password
    new_password: Password


class RefreshIn(StrictIn):
    refresh_token: OpaqueToken


class OrgOut(BaseModel):
    id: str
    name: str


class UserOut(BaseModel):
    id: str
    email: str
    name: str
    role: RoleName
    status: Literal["active", "disabled"]
    org_id: str
    mfa_enabled: bool
    created_at: datetime


class RegisterOut(BaseModel):
    user: UserOut
    organization: OrgOut


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a scheme name
    expires_in: int


class RegisterVerifiedOut(RegisterOut):
    """The new owner and organisation, signed in."""

    tokens: TokenOut


class MfaChallengeOut(BaseModel):
    mfa_required: Literal[True] = True
    mfa_token: str
    expires_in: int


class LoginOut(RootModel[TokenOut | MfaChallengeOut]):
    """Tokens, or (MFA on) a challenge to answer at ``/mfa/verify``."""


class MeOut(BaseModel):
    user: UserOut
    organization: OrgOut
    amr: list[str]


class JwksOut(BaseModel):
    keys: list[dict[str, str]]


class InviteIn(StrictIn):
    email: Email
    role: InvitableRole = "member"


class InviteOut(BaseModel):
    id: str
    email: str
    role: RoleName
    status: Literal["pending", "accepted", "revoked"]
    invited_by: str
    expires_at: datetime
    created_at: datetime


class InviteList(BaseModel):
    """One page of invites, newest first; ``next_cursor`` (``null`` on the last page) asks for the next one."""

    items: list[InviteOut]
    next_cursor: str | None = Field(description="`cursor` of the next page; null on the last page")


class InviteListQuery(PageQuery):
    status: Literal["pending", "accepted", "revoked"] | None = None


class AcceptInviteIn(StrictIn):
    token: OpaqueToken
    name: Name
    password: Password


class AcceptInviteOut(BaseModel):
    user: UserOut
    organization: OrgOut


class MemberList(BaseModel):
    """One page of members, by id; ``next_cursor`` (``null`` on the last page) asks for the next one."""

    items: list[UserOut]
    next_cursor: str | None = Field(description="`cursor` of the next page; null on the last page")


class RoleIn(StrictIn):
    role: InvitableRole


class MfaSetupOut(BaseModel):
    otpauth_uri: str
    qr_png: str = Field(description="data:image/png;base64 URI")
    qr_svg: str
    expires_in: int


class MfaStatusOut(BaseModel):
    enabled: bool
    recovery_codes_remaining: int = Field(description="unused recovery codes (0 when MFA is off)")


class MfaCodeIn(StrictIn):
    code: TotpCode


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str]


class MfaVerifyIn(StrictIn):
    """Exactly one of ``code`` and ``recovery_code``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [{"required": ["code"]}, {"required": ["recovery_code"]}]}
    )

    mfa_token: OpaqueToken
    code: TotpCode | SkipJsonSchema[None] = None
    recovery_code: RecoveryCode | SkipJsonSchema[None] = None


class MfaDisableIn(StrictIn):
    password: Password
    code: TotpCode
