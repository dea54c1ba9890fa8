"""Which events ask for which notifications, for whom; what they change in the projection."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse

import pytest

from novapulse_notification.constants import Category, Channel
from novapulse_notification.planning import (
    GENERAL,
    AddressTarget,
    Budget,
    InvalidEvent,
    RoleTarget,
    UserTarget,
    invite_link,
    plan,
    project,
)
from novapulse_runtime.catalog import auth as A
from novapulse_runtime.catalog import webhook as W
from novapulse_runtime.catalog import workflow as N

pytestmark = pytest.mark.unit

LINKS = {"base_url": "https://app.test/", "accept_path": "/invite/accept"}


def test_invite_link_encodes_the_token():
    link = invite_link("https://app.test/", "/invite/accept", "a b&c=d")
    assert link.startswith("https://app.test/invite/accept?token=")
    assert parse_qs(urlparse(link).query)["token"] == ["a b&c=d"]


def test_invitation_is_critical_email_to_an_address():
    data = A.InviteDeliveryRequested(
        invite_id="i",
        org_id="o",
        email="X@Y.test",
        role="member",
        token="t",
        inviter_name="In",
        organization="Org",
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    [intent] = plan("invite.delivery_requested", data, **LINKS)
    assert intent.target == AddressTarget("x@y.test")
    assert intent.channels == (Channel.EMAIL,)
    assert intent.critical


def test_security_events_are_critical():
    for data in (A.MfaEnabled(user_id="u", org_id="o"), A.PasswordChanged(user_id="u", org_id="o")):
        [intent] = plan("x", data, **LINKS)
        assert intent.category is Category.SECURITY
        assert intent.critical
        assert intent.target == UserTarget("u")


def test_webhook_events_target_owners_and_admins():
    data = W.EndpointDisabled(endpoint_id="e", org_id="o", url="https://h", reason="r")
    [intent] = plan("webhook.endpoint.disabled", data, **LINKS)
    assert intent.target == RoleTarget(("owner", "admin"))


def test_user_invited_only_feeds_nothing():
    data = A.UserInvited(
        invite_id="i", org_id="o", email="e@x", role="member", invited_by="u", expires_at=datetime.now(UTC)
    )
    assert plan("user.invited", data, **LINKS) == []
    assert project("user.invited", data) is None


def test_projection_changes():
    change = project("user.disabled", A.UserDisabled(user_id="u", org_id="o", disabled_by="a"))
    assert change is not None
    assert change.fields == {"status": "disabled"}
    change = project("user.role_changed", A.UserRoleChanged(user_id="u", org_id="o", role="admin", changed_by="a"))
    assert change is not None
    assert change.fields == {"role": "admin"}


def test_requested_needs_known_template_and_one_target():
    with pytest.raises(InvalidEvent):
        plan("notification.requested", N.NotificationRequested(org_id="o", template="nope", user_id="u"), **LINKS)
    with pytest.raises(InvalidEvent, match="exactly one"):
        plan("notification.requested", N.NotificationRequested(org_id="o", template="workflow_notice"), **LINKS)
    [intent] = plan(
        "notification.requested",
        N.NotificationRequested(org_id="o", template="workflow_notice", role="admin", data={"n": 5}),
        **LINKS,
    )
    assert intent.target == RoleTarget(("admin",))
    assert intent.context == {"data": {"n": "5"}}


def test_new_auth_events_plan_critical_mail_with_their_own_budgets():
    verify = A.VerificationRequested(
        email="N@X.test",
        name="Nia",
        organization="Org",
        token="a b&c",
        verify_url="https://elsewhere.test/x",
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    [intent] = plan("registration.verification_requested", verify, **LINKS, verify_path="/verify-email")
    assert intent.target == AddressTarget("n@x.test", "Nia")
    assert (intent.template, intent.channels, intent.critical) == ("verify_email", (Channel.EMAIL,), True)
    assert intent.budget == Budget("verification")
    assert intent.context["verify_url"] == "https://app.test/verify-email?token=a+b%26c"

    attempted = A.RegistrationAttempted(user_id="u", org_id="o", ip="192.0.2.1")
    [intent] = plan("user.registration_attempted", attempted, **LINKS)
    assert (intent.target, intent.template, intent.category) == (UserTarget("u"), "security_notice", Category.SECURITY)
    assert intent.critical
    assert intent.budget == Budget("security:registration_attempted")
    assert intent.context["login_url"] == "https://app.test/login"

    blocked = A.LoginBlocked(user_id="u", org_id="o", ip="192.0.2.1", failures=5, scope="client", retry_after_s=60)
    [intent] = plan("user.login_blocked", blocked, **LINKS)
    assert intent.budget == Budget("security:login_blocked")
    assert (intent.context["retry_after"], intent.context["scope"]) == ("60 seconds", "client")


def test_invitations_draw_from_their_budget_per_inviting_org():
    data = A.InviteDeliveryRequested(
        invite_id="i",
        org_id="org-7",
        email="x@y.test",
        role="member",
        token="t",
        inviter_name="In",
        organization="Org",
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    [intent] = plan("invite.delivery_requested", data, **LINKS)
    assert intent.budget == Budget("invitation", "org-7")
    [intent] = plan("user.password_changed", A.PasswordChanged(user_id="u", org_id="o"), **LINKS)
    assert intent.budget == Budget("security:password_changed")
    [intent] = plan(
        "user.role_changed", A.UserRoleChanged(user_id="u", org_id="o", role="admin", changed_by="x"), **LINKS
    )
    assert intent.budget == GENERAL


def test_endpoint_ids_are_one_encoded_path_segment_and_durations_never_negative():
    data = W.EndpointDisabled(endpoint_id="../../admin?x=1#y z", org_id="o", url="https://h.test", reason="r")
    [intent] = plan("webhook.endpoint.disabled", data, **LINKS)
    assert intent.context["endpoint_link"] == "https://app.test/webhooks/endpoints/..%2F..%2Fadmin%3Fx%3D1%23y%20z"
    blocked = A.LoginBlocked(user_id="u", org_id="o", ip="192.0.2.1", failures=1, scope="client", retry_after_s=-5)
    [intent] = plan("user.login_blocked", blocked, **LINKS)
    assert intent.context["retry_after"] == "0 seconds"
    long = A.LoginBlocked(user_id="u", org_id="o", ip="192.0.2.1", failures=1, scope="client", retry_after_s=7201)
    assert plan("user.login_blocked", long, **LINKS)[0].context["retry_after"] == "3 hours"
