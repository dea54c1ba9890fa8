"""Members and invites: an owner invites (the mail's link opens the console's accept page), the invitee
joins and is signed in, the owner changes their role, revokes an invite; a member sees the list only."""

from __future__ import annotations

import re
from collections.abc import Callable

from helpers_console import (
    INVITE_ACCEPT_PATH,
    PASSWORD,
    SignedIn,
    add_member,
    check_accessibility,
    enable_mfa,
    link_in,
    path_of,
    screenshot,
    unique_email,
)
from playwright.sync_api import Page, expect


def test_invite_accept_and_change_role(signed_in_page: Callable[..., SignedIn], page: Page) -> None:
    who = signed_in_page()
    owner_page, stack = who.page, who.stack
    owner_page.goto("/members")
    expect(owner_page.get_by_role("heading", name=f"Members of {who.owner.org_name}")).to_be_visible()
    check_accessibility(owner_page)

    invitee = unique_email("invitee")
    owner_page.get_by_label("E-mail address").fill(invitee)
    owner_page.get_by_label("Role", exact=True).select_option("member")
    owner_page.get_by_role("button", name="Send invitation").click()
    expect(owner_page.get_by_role("status").first).to_contain_text(f"Invitation sent to {invitee}")
    pending = owner_page.get_by_role("region", name="Pending invitations")
    expect(pending).to_contain_text(invitee)
    screenshot(owner_page, "members")

    # inviting a member again is refused, the reason beside the address
    owner_page.get_by_label("E-mail address").fill(who.owner.email)
    owner_page.get_by_role("button", name="Send invitation").click()
    expect(owner_page.locator("#invite-email-error")).to_be_visible()
    expect(owner_page.get_by_label("E-mail address")).to_have_attribute("aria-invalid", "true")

    # the invite mail's link opens the console's accept page (in another browser: anonymous)
    link = link_in(stack.wait_for_mail(invitee, "invit"), INVITE_ACCEPT_PATH)
    assert link.startswith(f"{stack.console_url}{INVITE_ACCEPT_PATH}?token=")
    page.goto(link)
    expect(page.get_by_role("heading", name="Accept your invitation")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "invite-accept")
    page.get_by_label("Your name").fill("Ivy Invitee")
    page.get_by_label("Choose a password").fill(PASSWORD)
    page.get_by_label("The password again").fill(PASSWORD + "x")
    page.get_by_role("button", name="Join").click()
    expect(page.locator("#confirm_password-error")).to_contain_text("differ")
    page.get_by_label("Choose a password").fill(PASSWORD)
    page.get_by_label("The password again").fill(PASSWORD)
    page.get_by_role("button", name="Join").click()
    assert path_of(page) == "/"
    expect(page.get_by_role("status").first).to_contain_text(f"Welcome to {who.owner.org_name}")
    expect(page.locator("header")).to_contain_text("(member,")
    # the link works once
    page.goto(link)
    page.get_by_label("Your name").fill("Ivy Again")
    page.get_by_label("Choose a password").fill(PASSWORD)
    page.get_by_label("The password again").fill(PASSWORD)
    page.get_by_role("button", name="Join").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid any more")

    # the owner sees the new member and makes them an admin
    owner_page.goto("/members")
    row = owner_page.get_by_role("row").filter(has_text=invitee)
    expect(row).to_contain_text("member")
    row.get_by_label("Role of Ivy Invitee").select_option("admin")
    row.get_by_role("button", name="Change role of Ivy Invitee").click()
    expect(owner_page.get_by_role("status").first).to_contain_text("The role is now admin")
    expect(owner_page.get_by_role("row").filter(has_text=invitee)).to_contain_text("admin")
    expect(owner_page.get_by_role("region", name="Pending invitations")).not_to_contain_text(invitee)

    # a second invite, revoked
    other = unique_email("revoked")
    owner_page.get_by_label("E-mail address").fill(other)
    owner_page.get_by_role("button", name="Send invitation").click()
    owner_page.once("dialog", lambda dialog: dialog.accept())
    owner_page.get_by_role("button", name=f"Revoke the invitation of {other}").click()
    expect(owner_page.get_by_role("status").first).to_contain_text("The invitation is revoked")
    expect(owner_page.get_by_role("region", name="Pending invitations")).not_to_contain_text(other)


def test_a_member_sees_the_list_without_controls(signed_in_page: Callable[..., SignedIn]) -> None:
    who = signed_in_page(role="member")
    page = who.page
    page.goto("/members")
    expect(page.get_by_role("row").filter(has_text=who.owner.email)).to_contain_text("owner")
    expect(page.get_by_role("row").filter(has_text=who.account.email)).to_contain_text("(you)")
    assert page.get_by_role("button", name=re.compile("Disable|Change role|Reset|Send invitation")).count() == 0
    assert page.get_by_role("heading", name="Pending invitations").count() == 0
    check_accessibility(page)
    # a member's POST is refused by the console (and would be by auth)
    token = page.locator("input[name=csrf_token]").first.get_attribute("value") or ""
    answer = page.request.post(
        f"{who.stack.console_url}/members/invites",
        form={"csrf_token": token, "email": unique_email("x"), "role": "member"},
        headers={"Origin": who.stack.console_url},
        max_redirects=0,
    )
    assert answer.status == 403


def test_an_admin_manages_members_but_not_roles(signed_in_page: Callable[..., SignedIn]) -> None:
    who = signed_in_page(role="admin")
    page, stack = who.page, who.stack
    member = add_member(stack, who.owner, "member", name="Max Member")
    enable_mfa(stack, member)
    page.goto("/members")
    expect(page.get_by_role("heading", name="Invite someone")).to_be_visible()
    owner_row = page.get_by_role("row").filter(has_text=who.owner.email)
    assert owner_row.get_by_role("button").count() == 0  # an admin cannot disable or reset the owner
    assert page.get_by_role("button", name=re.compile("Change role")).count() == 0  # roles: the owner's
    # the member's two-factor sign-in reset, then the member disabled
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Reset two-factor of Max Member").click()
    expect(page.get_by_role("status").first).to_contain_text("Two-factor sign-in is reset")
    row = page.get_by_role("row").filter(has_text=member.email)
    expect(row.get_by_role("cell").nth(4)).to_have_text("off")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Disable Max Member").click()
    expect(page.get_by_role("status").first).to_contain_text("The member is disabled")
    expect(page.get_by_role("row").filter(has_text=member.email)).to_contain_text("disabled")
    status, _ = stack.api("auth", "POST", "/login", {"email": member.email, "password": member.password})
    assert status == 401
