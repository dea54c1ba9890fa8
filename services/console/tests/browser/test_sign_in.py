"""Registration, sign-in (with the MFA step and the recovery-code fallback), sign-out and session expiry,
through the console's pages in a real browser."""

from __future__ import annotations

from helpers_console import (
    PASSWORD,
    Account,
    Stack,
    check_accessibility,
    path_of,
    screenshot,
    sign_in,
    unique_email,
)
from playwright.sync_api import Page, expect


def test_register_then_sign_in_and_out(page: Page, stack: Stack) -> None:
    page.goto("/register")
    check_accessibility(page)
    screenshot(page, "register")
    email = unique_email("reg")
    # a password the policy refuses: the reason beside the field, the other values kept
    page.get_by_label("Organisation name").fill("Blue Widgets")
    page.get_by_label("Your name").fill("Rita Registrant")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill("password")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#password-error")).to_be_visible()
    expect(page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Organisation name")).to_have_value("Blue Widgets")
    check_accessibility(page)
    page.get_by_label("Organisation name").fill("Blue Widgets")
    page.get_by_label("Your name").fill("Rita Registrant")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status")).to_contain_text("sign in")
    assert path_of(page) == "/sign-in"
    check_accessibility(page)
    screenshot(page, "sign-in")
    acct = Account(email, PASSWORD, "Rita Registrant", "Blue Widgets")
    sign_in(page, acct)
    assert path_of(page) == "/"
    expect(page.get_by_role("heading", level=1)).to_have_text("Blue Widgets")
    check_accessibility(page)
    screenshot(page, "home")
    page.get_by_role("button", name="Sign out").click()
    assert path_of(page) == "/sign-in"
    page.goto("/")
    assert path_of(page) == "/sign-in"
    page.goto("/login")  # the welcome mail's link
    assert path_of(page) == "/sign-in"
