"""Fixtures of the console's browser tests (helpers live in ``helpers_console.py``).

- ``stack`` (package): every service's api and worker and the console as real processes (:func:`start_stack`),
  started by the first browser test and stopped after the last one (this directory is a package for that:
  session-scoped, its eleven idle processes polled Redis and the MongoDB-wire server until the end of the
  whole test session, a share of both cores taken from every later test).
- ``browser`` (module): Debian's chromium driven by Playwright (sync API), headless; the tests skip with the
  reason when chromium is missing. Each ``launch`` gets a fresh temporary user-data directory from Playwright.
- ``page``: an anonymous page on the console in a fresh context.
- ``signed_in_page(role="owner", mfa=False, operator=False)``: a new organisation (and, for ``admin`` or
  ``member``, a user invited into it), signed in through the console's pages; returns
  :class:`helpers_console.SignedIn` (import it from ``helpers_console``: test modules should not import
  ``conftest``, a name every test folder has).

Every page these fixtures make is checked at teardown for Content-Security-Policy violations in its console.
Tests are plain (sync) functions: the Playwright sync API must not run inside an asyncio loop.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))  # helpers_console

from collections.abc import Callable, Iterator

import pytest
from helpers_console import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SignedIn,
    Stack,
    add_member,
    chromium_missing,
    csp_violations,
    enable_mfa,
    new_page,
    register_org,
    sign_in,
    start_stack,
)
from playwright.sync_api import Browser, Page, sync_playwright

from novapulse_devkit.testing import Servers

BROWSER_TEST_TIMEOUT = 600
"""Seconds a browser test may take, its share of the stack's start-up included (the first one pays it)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(BROWSER_TEST_TIMEOUT))


@pytest.fixture(scope="package")
def stack(servers: Servers, run_dir: Path) -> Iterator[Stack]:
    """The whole suite as real processes, once for the browser tests."""
    if chromium_missing():
        pytest.skip(chromium_missing())
    # a namespace (bus streams, database names) of its own: REDIS_URL / MONGO_URL may name servers that outlive
    # the session, where accounts of an earlier run still exist
    started = start_stack(servers.redis_url, servers.mongo_url, run_dir, f"console{uuid.uuid4().hex[:8]}")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless chromium (Debian's), or a skip saying why there is none. One per test module, not per session:
    Playwright's sync API keeps an event loop running in the main thread while it is open, and every
    pytest-asyncio test after it in the session (other services' tests in ``make test``) would fail to
    start its own loop."""
    why = chromium_missing()
    if why:
        pytest.skip(why)
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _no_csp_violations(pages: list[Page]) -> None:
    found = [f"{p.url}: {m}" for p in pages for m in csp_violations(p)]
    assert not found, "Content-Security-Policy violations in the browser console:\n" + "\n".join(found)


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """An anonymous page on the console (fresh cookies)."""
    made = new_page(browser, stack)
    yield made
    made.context.close()
    _no_csp_violations([made])


@pytest.fixture
def signed_in_page(browser: Browser, stack: Stack) -> Iterator[Callable[..., SignedIn]]:
    """``signed_in_page(role="owner", mfa=False, operator=False)`` → :class:`SignedIn`: a new organisation,
    a user with ``role`` in it (MFA on when ``mfa``; an operator — a ``CONSOLE_OPERATOR_EMAILS`` owner, MFA
    always on — when ``operator``), signed in through the console's pages in a fresh context."""
    pages: list[Page] = []

    def make(role: str = "owner", mfa: bool = False, operator: bool = False) -> SignedIn:
        owner = register_org(stack, email=stack.take_operator_email() if operator else None)
        acct = owner if role == "owner" else add_member(stack, owner, role)
        if mfa or (operator and role == "owner"):
            enable_mfa(stack, acct)
        made = new_page(browser, stack)
        pages.append(made)
        sign_in(made, acct)
        return SignedIn(made, acct, owner, stack)

    yield make
    for made in pages:
        made.context.close()
    _no_csp_violations(pages)
