"""Pure logic: what an event changes in the user projection, and which notifications it asks for.

Nothing here does I/O. :func:`plan` turns one event into :class:`Intent` values (who, which template, which
category, which context); the worker resolves the targets against the projection and delivers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from pydantic import BaseModel

from novapulse_runtime import jsonstrict
from novapulse_runtime.bus import PermanentError
from novapulse_runtime.catalog import auth as auth_events
from novapulse_runtime.catalog import report as report_events
from novapulse_runtime.catalog import webhook as webhook_events
from novapulse_runtime.catalog import workflow as workflow_events
from novapulse_runtime.roles import MANAGERS

from .constants import MAX_REQUEST_DATA_KEYS, MAX_REQUEST_VALUE_CHARS, Category, Channel

BOTH = (Channel.IN_APP, Channel.EMAIL)
EMAIL_ONLY = (Channel.EMAIL,)


class InvalidEvent(PermanentError):
    """The event cannot produce a notification however often it is retried: the bus dead-letters it at once
    (reason ``rejected``)."""


@dataclass(frozen=True)
class UserTarget:
    """One user of the event's organisation, looked up in the projection."""

    user_id: str


@dataclass(frozen=True)
class RoleTarget:
    """Every active user of the event's organisation holding one of these roles."""

    roles: tuple[str, ...]


@dataclass(frozen=True)
class AddressTarget:
    """Someone who is not (yet) a user: an invitee. Only e-mail can reach them; no preferences apply."""

    email: str
    name: str = ""


Target = UserTarget | RoleTarget | AddressTarget


@dataclass(frozen=True)
class Budget:
    """The per-recipient e-mail budget a mail draws from. Budgets are separate by kind, so no kind of mail can
    use up another's (issue 11: 32 invitations must not silence a "password changed" notice):

    - ``general``: welcome, role, webhook, report and workflow mail (``RECIPIENT_EMAIL_LIMIT``);
    - ``invitation``: per invited address (``INVITATION_RECIPIENT_LIMIT``) and per inviting organisation
      ``org_id`` (``INVITATION_ORG_LIMIT``);
    - ``security:<kind>``: each kind of security notice its own (``SECURITY_EMAIL_LIMIT``), so a flood of
      one kind (failed second factors) is held back without touching another (password changed);
    - ``verification``: registration verification links (``VERIFICATION_EMAIL_LIMIT``).
    """

    name: str = "general"
    org_id: str | None = None


GENERAL = Budget()


@dataclass(frozen=True)
class Intent:
    """A notification the event asks for, before recipients are resolved: whom (``target``), which
    ``template`` (a name in :data:`TEMPLATES`) of which ``category``, the template ``context`` (variables
    beyond the recipient's), on which ``channels``, whether it ignores opt-outs (``critical``) and which
    e-mail ``budget`` it draws from."""

    target: Target
    template: str
    category: Category
    context: Mapping[str, Any] = field(default_factory=dict)
    channels: tuple[Channel, ...] = BOTH
    critical: bool = False
    budget: Budget = GENERAL


@dataclass(frozen=True)
class TemplateInfo:
    """What the service knows of one template: the category its notifications belong to."""

    category: Category
    requestable: bool = False
    """Whether ``notification.requested`` may name it."""


TEMPLATES: dict[str, TemplateInfo] = {
    "welcome": TemplateInfo(Category.ACCOUNT),
    "invitation": TemplateInfo(Category.ACCOUNT),
    "invite_accepted": TemplateInfo(Category.ACCOUNT),
    "role_changed": TemplateInfo(Category.ACCOUNT),
    "security_notice": TemplateInfo(Category.SECURITY),
    "verify_email": TemplateInfo(Category.ACCOUNT),
    "webhook_endpoint_disabled": TemplateInfo(Category.WEBHOOKS),
    "webhook_message_failed": TemplateInfo(Category.WEBHOOKS),
    "report_completed": TemplateInfo(Category.REPORTS),
    "workflow_notice": TemplateInfo(Category.WORKFLOWS, requestable=True),
}


@dataclass(frozen=True)
class UserChange:
    """An update to the projection of users: fields to set on (org_id, user_id)."""

    org_id: str
    user_id: str
    fields: Mapping[str, Any]


def project(event_type: str, data: BaseModel) -> UserChange | None:
    """What the event changes in the user projection, if anything: registration and invite acceptance set
    e-mail (lower-cased), name, role and ``status`` ``active``; a role change the role; a disabled user
    ``status`` ``disabled``. ``None`` for any other event."""
    if isinstance(data, auth_events.UserRegistered):
        return UserChange(
            data.org_id,
            data.user_id,
            {
                "email": data.email.lower(),
                "name": data.name,
                "role": data.role,
                "status": "active",
                "organization": data.organization,
            },
        )
    if isinstance(data, auth_events.InviteAccepted):
        return UserChange(
            data.org_id,
            data.user_id,
            {"email": data.email.lower(), "name": data.name, "role": data.role, "status": "active"},
        )
    if isinstance(data, auth_events.UserRoleChanged):
        return UserChange(data.org_id, data.user_id, {"role": data.role})
    if isinstance(data, auth_events.UserDisabled):
        return UserChange(data.org_id, data.user_id, {"status": "disabled"})
    return None


def _security(user_id: str, kind: str, **extra: Any) -> list[Intent]:
    return [
        Intent(
            UserTarget(user_id),
            "security_notice",
            Category.SECURITY,
            {"kind": kind, **extra},
            critical=True,
            budget=Budget(f"security:{kind}"),
        )
    ]


def invite_link(base_url: str, accept_path: str, token: str) -> str:
    """The accept link of an invitation: ``PUBLIC_BASE_URL`` + accept path + ``?token=``."""
    return f"{base_url.rstrip('/')}{accept_path}?{urlencode({'token': token})}"


def verify_link(base_url: str, verify_path: str, token: str) -> str:
    """The e-mail verification link: ``PUBLIC_BASE_URL`` + ``VERIFY_EMAIL_PATH`` + ``?token=`` (URL-encoded),
    built like :func:`invite_link`; the event's ``verify_url`` is ignored."""
    return f"{base_url.rstrip('/')}{verify_path}?{urlencode({'token': token})}"


def endpoint_link(base_url: str, endpoint_id: str) -> str:
    """The console page of a webhook endpoint; the id is one percent-encoded path segment (RFC 3986 §3.3),
    so an id with ``/``, ``?``, ``#`` or spaces cannot change where the link points."""
    return f"{base_url.rstrip('/')}/webhooks/endpoints/{quote(endpoint_id, safe='')}"


def _duration(seconds: int) -> str:
    """``retry_after_s`` in words: "45 seconds", "15 minutes", "2 hours"."""
    seconds = max(0, seconds)
    if seconds < 120:
        return f"{seconds} second{'' if seconds == 1 else 's'}"
    if seconds < 7200:
        minutes = (seconds + 59) // 60
        return f"{minutes} minutes"
    return f"{(seconds + 3599) // 3600} hours"


def plan(
    event_type: str, data: BaseModel, *, base_url: str, accept_path: str, verify_path: str = "/register/verify"
) -> list[Intent]:
    """The notifications one event asks for (an empty list when it only feeds the projection).

    ``data`` is the event's validated catalog model (:mod:`novapulse_runtime.catalog`); ``base_url`` (no
    trailing slash needed), ``accept_path`` and ``verify_path`` build the links of invitations and
    verification mails. Security notices are critical (they ignore opt-outs) and each kind has its own
    budget; webhook notices go to the organisation's owners and admins (``MANAGERS``).

    :raises InvalidEvent: a ``notification.requested`` that names a template it may not, both or neither of
        ``user_id`` and ``role``, or more data than ``MAX_REQUEST_DATA_KEYS`` keys.
    """
    base = base_url.rstrip("/")
    if isinstance(data, auth_events.UserRegistered):
        ctx: dict[str, Any] = {"organization": data.organization, "login_url": f"{base}/login"}
        return [Intent(UserTarget(data.user_id), "welcome", Category.ACCOUNT, ctx)]
    if isinstance(data, auth_events.InviteDeliveryRequested):
        ctx = {
            "organization": data.organization,
            "inviter_name": data.inviter_name,
            "role": data.role,
            "accept_url": invite_link(base, accept_path, data.token),
            "expires_at": data.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
        }
        # Transactional, addressed to a person who has no preferences yet: never suppressed by preferences;
        # its own budget per invited address and per inviting organisation.
        budget = Budget("invitation", data.org_id)
        target = AddressTarget(data.email.lower())
        return [Intent(target, "invitation", Category.ACCOUNT, ctx, EMAIL_ONLY, True, budget)]
    if isinstance(data, auth_events.VerificationRequested):
        ctx = {
            "organization": data.organization,
            "verify_url": verify_link(base, verify_path, data.token),
            "expires_at": data.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
        }
        target = AddressTarget(data.email.lower(), data.name)
        return [Intent(target, "verify_email", Category.ACCOUNT, ctx, EMAIL_ONLY, True, Budget("verification"))]
    if isinstance(data, auth_events.RegistrationAttempted):
        return _security(data.user_id, "registration_attempted", ip=data.ip, login_url=f"{base}/login")
    if isinstance(data, auth_events.LoginBlocked):
        return _security(
            data.user_id,
            "login_blocked",
            ip=data.ip,
            failures=data.failures,
            scope=data.scope,
            retry_after=_duration(data.retry_after_s),
        )
    if isinstance(data, auth_events.InviteAccepted):
        ctx = {"member_name": data.name, "member_email": data.email, "role": data.role}
        return [Intent(UserTarget(data.invited_by), "invite_accepted", Category.ACCOUNT, ctx)]
    if isinstance(data, auth_events.UserRoleChanged):
        return [Intent(UserTarget(data.user_id), "role_changed", Category.ACCOUNT, {"role": data.role})]
    if isinstance(data, auth_events.PasswordChanged):
        return _security(data.user_id, "password_changed")
    if isinstance(data, auth_events.MfaEnabled):
        return _security(data.user_id, "mfa_enabled")
    if isinstance(data, auth_events.MfaDisabled):
        return _security(data.user_id, "mfa_disabled", by_admin=data.by != data.user_id)
    if isinstance(data, auth_events.MfaRecoveryCodeUsed):
        return _security(data.user_id, "recovery_code_used", remaining=data.remaining)
    if isinstance(data, auth_events.MfaChallengeFailed):
        return _security(data.user_id, "challenge_failed", ip=data.ip, attempts=data.attempts)
    if isinstance(data, webhook_events.EndpointDisabled):
        ctx = {"endpoint_id": data.endpoint_id, "url": data.url, "reason": data.reason}
        ctx["endpoint_link"] = endpoint_link(base, data.endpoint_id)
        return [Intent(RoleTarget(MANAGERS), "webhook_endpoint_disabled", Category.WEBHOOKS, ctx)]
    if isinstance(data, webhook_events.MessageFailed):
        ctx = {
            "endpoint_id": data.endpoint_id,
            "message_id": data.message_id,
            "event_type": data.event_type,
            "attempts": data.attempts,
            "last_error": data.last_error,
            "endpoint_link": endpoint_link(base, data.endpoint_id),
        }
        return [Intent(RoleTarget(MANAGERS), "webhook_message_failed", Category.WEBHOOKS, ctx)]
    if isinstance(data, report_events.ReportCompleted):
        path = data.download_path if data.download_path.startswith("/") else "/" + data.download_path
        ctx = {"report_name": data.name, "format": data.format, "download_url": f"{base}{path}"}
        return [Intent(UserTarget(data.requested_by), "report_completed", Category.REPORTS, ctx)]
    if isinstance(data, workflow_events.NotificationRequested):
        return [_requested(data)]
    return []


def _requested(data: workflow_events.NotificationRequested) -> Intent:
    info = TEMPLATES.get(data.template)
    if info is None or not info.requestable:
        allowed = sorted(n for n, t in TEMPLATES.items() if t.requestable)
        raise InvalidEvent(f"template {data.template!r} cannot be requested; use one of {allowed}")
    if (data.user_id is None) == (data.role is None):
        raise InvalidEvent("notification.requested needs exactly one of user_id or role")
    if len(data.data) > MAX_REQUEST_DATA_KEYS:
        raise InvalidEvent(f"notification.requested data has more than {MAX_REQUEST_DATA_KEYS} keys")
    values: dict[str, str] = {}
    for key, value in data.data.items():
        try:  # a non-string value is shown as its JSON text (RFC 8259), never as a Python repr
            text = value if isinstance(value, str) else jsonstrict.dumps(value)
        except jsonstrict.InvalidJSON as exc:
            raise InvalidEvent(f"notification.requested data.{str(key)[:64]}: {exc}") from None
        values[str(key)[:64]] = text[:MAX_REQUEST_VALUE_CHARS]
    target: Target = UserTarget(data.user_id) if data.user_id is not None else RoleTarget((str(data.role),))
    return Intent(target, data.template, info.category, {"data": values})
