"""The console's browser-facing defences: a strict CSP (and the other security headers) on every page with no
inline script or style, CSRF (a POST without the token, or from another origin, is refused), the session
cookie (tampered or expired: back to sign-in)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.fernet import Fernet
from helpers_console import SignedIn, Stack, check_accessibility, new_page, path_of
from playwright.sync_api import Browser, Page, expect

from novapulse_console.constants import CONTENT_SECURITY_POLICY
from novapulse_devkit.stack import DEV_ENV

SIGNED_IN_PAGES = (
    "/",
    "/account",
    "/account/mfa",
    "/members",
    "/notifications",
    "/notifications/preferences",
)
ANONYMOUS_PAGES = (
    "/sign-in",
    "/register",
    "/register/verify?token=x",
    "/invites/accept?token=x",
    "/invite/accept?token=x",
)


def _check_headers(page: Page, path: str) -> None:
    response = page.goto(path)
    assert response is not None
    assert response.status == 200, f"{path}: {response.status}"
    headers = response.headers
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cache-control"] == "no-store"
    # nothing the CSP would have to refuse: no inline script, no inline style, no event-handler attributes
    assert page.locator("script:not([src])").count() == 0, path
    assert page.locator("[style]").count() == 0, path
    assert page.locator("style").count() == 0, path
    handlers = page.evaluate(
        "() => [...document.querySelectorAll('*')].flatMap(e => [...e.attributes].map(a => a.name))"
        ".filter(n => n.startsWith('on'))"
    )
    assert handlers == [], f"{path}: inline event handlers {handlers}"


def test_strict_csp_and_headers_on_every_page(page: Page, signed_in_page: Callable[..., SignedIn]) -> None:
    for path in ANONYMOUS_PAGES:
        _check_headers(page, path)
    who = signed_in_page(mfa=True)
    for path in SIGNED_IN_PAGES:
        _check_headers(who.page, path)
    # the htmx fragment ran (no CSP error) — the fixtures fail the test on any CSP violation in the console
    expect(who.page.locator("#unread-count")).to_be_attached()


@pytest.fixture
def other_origin() -> Iterator[dict[str, Any]]:
    """A page on another origin (another port of 127.0.0.1: same site, so the Lax cookie still goes) that
    posts a form to the console: ``state["html"]`` is what it serves."""
    state: dict[str, Any] = {"html": ""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = state["html"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def test_posts_without_the_token_or_from_elsewhere_are_refused(
    signed_in_page: Callable[..., SignedIn], other_origin: dict[str, Any]
) -> None:
    who = signed_in_page()
    page, stack = who.page, who.stack
    page.goto("/notifications")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value") or ""
    assert len(token) >= 32
    # no token (the session cookie goes with it): 403
    refused = page.request.post(f"{stack.console_url}/notifications/read-all", form={}, max_redirects=0)
    assert refused.status == 403
    assert "CSRF" in refused.text()
    # a wrong token: 403
    refused = page.request.post(
        f"{stack.console_url}/notifications/read-all", form={"csrf_token": "x" * 43}, max_redirects=0
    )
    assert refused.status == 403
    # the right token in the header, as htmx sends it, from this origin: accepted
    accepted = page.request.post(
        f"{stack.console_url}/notifications/read-all",
        headers={"X-CSRF-Token": token, "Origin": stack.console_url},
        max_redirects=0,
    )
    assert accepted.status == 303
    # the right token but posted by a page of another origin: 403, whatever the token
    other_origin["html"] = (
        '<!doctype html><html lang="en"><title>elsewhere</title>'
        f'<form method="post" action="{stack.console_url}/notifications/read-all">'
        f'<input type="hidden" name="csrf_token" value="{token}"><button>Go</button></form></html>'
    )
    page.goto(other_origin["url"])
    with page.expect_response(lambda r: r.url.endswith("/notifications/read-all")) as posted:
        page.get_by_role("button", name="Go").click()
    assert posted.value.status == 403
    expect(page.get_by_role("heading", name="Request refused")).to_be_visible()
    check_accessibility(page)  # the error page


def _cookie(page: Page) -> dict[str, Any]:
    [cookie] = [c for c in page.context.cookies() if c["name"] == "np_console"]
    return dict(cookie)


def test_tampered_or_expired_cookie_sends_to_sign_in(signed_in_page: Callable[..., SignedIn]) -> None:
    who = signed_in_page()
    page = who.page
    page.goto("/account")
    good = _cookie(page)
    # tampered: one character changed → not opened → anonymous → sign-in, and back after
    value = good["value"]
    bad = value[:40] + ("A" if value[40] != "A" else "B") + value[41:]
    page.context.add_cookies([{**good, "value": bad}])
    page.goto("/account")
    assert path_of(page) == "/sign-in"
    assert "next=%2Faccount" in page.url
    # expired: the same session re-sealed with a time past CONSOLE_SESSION_MAX_AGE (12 h)
    fernet = Fernet(DEV_ENV["console"]["CONSOLE_SESSION_KEYS"].encode())
    session = json.loads(fernet.decrypt(value.encode()))
    assert session["email"] == who.account.email
    old = fernet.encrypt_at_time(json.dumps(session).encode(), int(time.time()) - 43_200 - 60).decode()
    page.context.add_cookies([{**good, "value": old}])
    page.goto("/members")
    assert path_of(page) == "/sign-in"
    # the untouched cookie still works
    page.context.add_cookies([good])
    page.goto("/account")
    assert path_of(page) == "/account"


def test_sign_in_returns_to_the_page_asked_for(
    browser: Browser, stack: Stack, signed_in_page: Callable[..., SignedIn]
) -> None:
    acct = signed_in_page().account
    page = new_page(browser, stack)
    try:
        page.goto("/notifications/preferences")
        assert path_of(page) == "/sign-in"
        page.get_by_label("E-mail address").fill(acct.email)
        page.get_by_label("Password").fill(acct.password)
        page.get_by_role("button", name="Sign in").click()
        assert path_of(page) == "/notifications/preferences"
        # an off-site next= is ignored
        page.get_by_role("button", name="Sign out").click()
        page.goto("/sign-in?next=//evil.example.com/")
        page.get_by_label("E-mail address").fill(acct.email)
        page.get_by_label("Password").fill(acct.password)
        page.get_by_role("button", name="Sign in").click()
        assert page.url == f"{stack.console_url}/"
    finally:
        page.context.close()
