"""The account pages: profile and password, two-factor set-up (QR code drawn by the console, the key to type,
recovery codes shown once with a download), signing in with a code and with a recovery code, the
few-codes-left warning, new codes, turning it off; operators need MFA."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote

from helpers_console import (
    PASSWORD,
    SignedIn,
    api_token,
    check_accessibility,
    path_of,
    screenshot,
    sign_in,
    wrong_code,
)
from playwright.sync_api import Page, expect


def _sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    assert path_of(page) == "/sign-in"


def test_two_factor_set_up_sign_in_and_recovery_codes(signed_in_page: Callable[..., SignedIn]) -> None:
    who = signed_in_page()
    page, acct, stack = who.page, who.account, who.stack
    page.goto("/account")
    expect(page.get_by_role("heading", name="Sign-in method")).to_be_visible()
    expect(page.locator("main")).to_contain_text("two-factor sign-in is off")
    check_accessibility(page)
    screenshot(page, "account")

    page.get_by_role("link", name="Turn on two-factor sign-in").click()
    assert path_of(page) == "/account/mfa"
    check_accessibility(page)
    page.get_by_role("button", name="Set up two-factor sign-in").click()
    # the QR code is the console's own inline SVG; the key to type is the URI's secret
    qr = page.locator("figure.qr svg")
    expect(qr).to_be_visible()
    assert qr.locator("title").text_content() == "QR code for your authenticator app"
    assert page.locator("figure.qr img, figure.qr script").count() == 0
    acct.totp_secret = page.locator("#manual-key").inner_text().replace(" ", "")
    assert len(acct.totp_secret) >= 32
    check_accessibility(page)
    screenshot(page, "mfa-setup")

    page.get_by_label("Code from your authenticator app").fill(wrong_code(acct))
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("alert")).to_contain_text("That code is not right")
    expect(page.locator("figure.qr svg")).to_be_visible()  # the same set-up, shown again
    page.get_by_label("Code from your authenticator app").fill(acct.code())
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    acct.recovery_codes = page.locator("ul.codes code").all_inner_texts()
    assert len(acct.recovery_codes) == 10
    download = page.get_by_role("button", name="Download as a text file")
    href = download.get_attribute("href") or ""
    assert href.startswith("data:text/plain")
    assert all(code in unquote(href) for code in acct.recovery_codes)
    assert download.get_attribute("download") == "novapulse-recovery-codes.txt"
    check_accessibility(page)
    screenshot(page, "mfa-recovery-codes")
    page.get_by_role("button", name="I have saved them").click()
    expect(page.locator("main")).to_contain_text("You have 10 unused recovery codes")
    screenshot(page, "mfa-on")

    # sign out, in again with the MFA step
    _sign_out(page)
    page.get_by_label("E-mail address").fill(acct.email)
    page.get_by_label("Password").fill(acct.password)
    page.get_by_role("button", name="Sign in").click()
    assert path_of(page) == "/sign-in/mfa"
    check_accessibility(page)
    screenshot(page, "sign-in-mfa")
    page.get_by_label("Code from your authenticator app").fill(wrong_code(acct))
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_contain_text("That code is not right")
    page.get_by_label("Code from your authenticator app").fill(acct.code())
    page.get_by_role("button", name="Verify").click()
    assert path_of(page) == "/"
    _sign_out(page)
    # the recovery-code fallback
    sign_in(page, acct, recovery_code=acct.recovery_codes[0])
    page.goto("/account/mfa")
    expect(page.locator("main")).to_contain_text("You have 9 unused recovery codes")

    # spend codes through the API down to 4, then one more in the browser: the warning after sign-in
    for code in acct.recovery_codes[1:6]:
        _s, challenge = stack.api("auth", "POST", "/login", {"email": acct.email, "password": PASSWORD}, expect=200)
        answer = {"mfa_token": challenge["mfa_token"], "recovery_code": code}
        stack.api("auth", "POST", "/mfa/verify", answer, expect=200)
    _sign_out(page)
    sign_in(page, acct, recovery_code=acct.recovery_codes[6])
    expect(page.locator(".flash-warning").first).to_contain_text("Only 3 recovery codes are left")
    page.goto("/account/mfa")
    expect(page.locator("#few-codes")).to_contain_text("Only 3 recovery codes left")
    check_accessibility(page)

    # new codes with a current code: the old ones stop working
    page.locator("#regen-code").fill(wrong_code(acct))
    page.get_by_role("button", name="Make new recovery codes").click()
    expect(page.locator("#regen-error")).to_contain_text("not right")
    page.locator("#regen-code").fill(acct.code())
    page.get_by_role("button", name="Make new recovery codes").click()
    fresh = page.locator("ul.codes code").all_inner_texts()
    assert len(fresh) == 10
    assert not set(fresh) & set(acct.recovery_codes)
    expect(page.locator("main")).to_contain_text("Your earlier codes no longer work")
    acct.recovery_codes = fresh

    # off with the password and a code
    page.goto("/account/mfa")
    page.locator("#disable-password").fill("not the password")
    page.locator("#disable-code").fill(wrong_code(acct))
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Turn off").click()
    expect(page.locator("#disable-error")).to_contain_text("not right")
    page.locator("#disable-password").fill(PASSWORD)
    page.locator("#disable-code").fill(acct.code())
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Turn off").click()
    expect(page.get_by_role("status").first).to_contain_text("Two-factor sign-in is off")
    expect(page.get_by_role("button", name="Set up two-factor sign-in")).to_be_visible()
    _sign_out(page)
    acct.totp_secret = ""
    sign_in(page, acct)  # password only again
    assert path_of(page) == "/"


def test_change_password(signed_in_page: Callable[..., SignedIn]) -> None:
    who = signed_in_page()
    page, acct = who.page, who.account
    page.goto("/account")
    page.get_by_label("Current password").fill("wrong password entirely")
    page.get_by_label("New password", exact=True).fill("a brand new passphrase 77")
    page.get_by_label("New password again").fill("a brand new passphrase 77")
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#current_password-error")).to_contain_text("not your current password")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("password")
    page.get_by_label("New password again").fill("password")
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#new_password-error")).to_be_visible()
    check_accessibility(page)  # with the field errors shown
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("a brand new passphrase 77")
    page.get_by_label("New password again").fill("a brand new passphrase 77")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("status").first).to_contain_text("Your password is changed")
    _sign_out(page)
    acct.password = "a brand new passphrase 77"
    sign_in(page, acct)


def test_an_operator_needs_two_factor(signed_in_page: Callable[..., SignedIn]) -> None:
    """A CONSOLE_OPERATOR_EMAILS address is an operator only with MFA on, and stops being one when it goes off."""
    who = signed_in_page(operator=True)  # the fixture turns MFA on for operators
    page, acct, stack = who.page, who.account, who.stack
    page.goto("/account")
    expect(page.locator("dl.facts")).to_contain_text("Operator")
    # MFA off (through the API): the next sign-in is no operator's, and says why
    token = api_token(stack, acct)
    stack.api("auth", "POST", "/mfa/disable", {"password": PASSWORD, "code": acct.code()}, token, expect=204)
    _sign_out(page)
    acct.totp_secret = ""
    sign_in(page, acct)
    expect(page.locator(".flash-warning").first).to_contain_text("Operator pages need two-factor sign-in")
    page.goto("/account")
    expect(page.locator("dl.facts")).not_to_contain_text("Operator")
