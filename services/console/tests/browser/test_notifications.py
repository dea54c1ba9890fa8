"""The in-app inbox: the welcome notice the notification service makes for a new organisation's owner, the
unread count in the navigation (htmx polls it), read one, read all, and the preferences."""

from __future__ import annotations

import time
from collections.abc import Callable

from helpers_console import SignedIn, api_token, check_accessibility, screenshot
from playwright.sync_api import Page, expect


def _wait_for_notice(page: Page, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        page.goto("/notifications")
        if text in page.locator("main").inner_text():
            return
        assert time.monotonic() < deadline, f"no notice with {text!r} within {timeout}s"
        time.sleep(0.5)


def test_inbox_badge_and_read(signed_in_page: Callable[..., SignedIn]) -> None:
    who = signed_in_page()
    page = who.page
    _wait_for_notice(page, "Welcome")
    notice = page.locator("ul.notices li.unread").filter(has_text="Welcome")
    expect(notice).to_have_count(1)
    # the navigation's unread count, loaded and refreshed by htmx from /notifications/badge
    expect(page.locator("#unread-count .badge")).to_have_text("1 unread")
    check_accessibility(page)
    screenshot(page, "notifications")
    # read elsewhere (the API): the open page's count goes within one polling period, without a reload
    page.goto("/notifications/preferences")
    expect(page.locator("#unread-count .badge")).to_have_text("1 unread")
    page.evaluate("() => { window.notReloaded = true; }")
    _s, found = who.stack.api("notification", "GET", "/notifications", token=_token(who), expect=200)
    [welcome] = [n for n in found["items"] if "Welcome" in n["title"]]
    who.stack.api("notification", "POST", f"/notifications/{welcome['id']}/read", token=_token(who), expect=200)
    expect(page.locator("#unread-count .badge")).to_have_count(0, timeout=25_000)
    assert page.evaluate("() => window.notReloaded === true")  # the same document: htmx swapped the count

    # and read in the page
    page.goto("/notifications")
    expect(page.locator("ul.notices li.read").filter(has_text="Welcome")).to_have_count(1)
    page.get_by_role("link", name="Show unread only").click()
    expect(page.locator("main")).to_contain_text("Nothing unread")


def test_mark_one_read_in_the_page(signed_in_page: Callable[..., SignedIn]) -> None:
    who = signed_in_page()
    page = who.page
    _wait_for_notice(page, "Welcome")
    notice = page.locator("ul.notices li.unread").filter(has_text="Welcome")
    notice.get_by_role("button", name="Mark read").click()
    expect(page.locator("ul.notices li.read").filter(has_text="Welcome")).to_have_count(1)
    expect(page.locator("#unread-count .badge")).to_have_count(0)
    expect(page.locator("main")).to_contain_text("0 unread")
    page.get_by_role("link", name="Show unread only").click()
    expect(page.locator("main")).to_contain_text("Nothing unread")


def test_read_all_and_preferences(signed_in_page: Callable[..., SignedIn]) -> None:
    who = signed_in_page()
    page = who.page
    _wait_for_notice(page, "Welcome")
    page.get_by_role("button", name="Mark all read").click()
    expect(page.get_by_role("status").first).to_contain_text("1 notification marked read")

    page.goto("/notifications/preferences")
    check_accessibility(page)
    security = page.get_by_label("Security (sign-ins, two-factor, passwords): By e-mail")
    expect(security).to_be_checked()
    expect(security).to_be_disabled()
    webhooks_mail = page.get_by_label("Webhooks: By e-mail")
    expect(webhooks_mail).to_be_checked()
    webhooks_mail.uncheck()
    page.get_by_role("button", name="Save preferences").click()
    expect(page.get_by_role("status").first).to_contain_text("preferences are saved")
    expect(page.get_by_label("Webhooks: By e-mail")).not_to_be_checked()
    expect(page.get_by_label("Webhooks: In the console")).to_be_checked()
    screenshot(page, "notification-preferences")
    _s, prefs = who.stack.api("notification", "GET", "/preferences", token=_token(who))
    assert prefs["categories"]["webhooks"] == {"email": False, "in_app": True}


def _token(who: SignedIn) -> str:
    token: str = api_token(who.stack, who.account)
    return token
