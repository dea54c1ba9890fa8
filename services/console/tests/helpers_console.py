"""Helpers of the console's browser tests: the whole suite as real processes (:func:`start_stack`), accounts
made through the services' public APIs, the sign-in flow in a real browser, the axe-core check, screenshots
and the console-error log of each page.

Fixtures built on these live in ``conftest.py`` (``stack``, ``browser``, ``page``, ``signed_in_page``).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

from novapulse_devkit.servers import port_open
from novapulse_devkit.stack import _default_port, _PortShift, dev_defaults, discover, process_env, roles
from novapulse_runtime.constants import READY_PATH

HERE = Path(__file__).parent
INVITE_ACCEPT_PATH = "/invites/accept"
"""Where ``make run``'s invite mails link to (``INVITE_ACCEPT_PATH`` in the devkit's ``DEV_ENV``)."""
REPO = HERE.parents[2]
CHROMIUM = os.environ.get("CONSOLE_TEST_CHROMIUM", "/usr/bin/chromium")
"""The browser the tests drive: Debian's ``chromium`` (``make browser-tools``); without it they skip."""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE_JS = HERE / "browser" / "node_modules" / "axe-core" / "axe.min.js"
"""axe-core from npm (``services/console/tests/browser/package.json``, installed by ``make browser-tools``)."""
SCREENSHOT_DIR = REPO / "docs" / "console"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
PASSWORD = "correct horse battery staple 42"
OPERATIONS_TOKEN = "console-tests-operations-token-0123456789abcdef"
OPERATOR_EMAILS = [f"operator{i}@ops.example.com" for i in range(1, 21)]
"""``CONSOLE_OPERATOR_EMAILS`` of the test stack: each operator sign-in takes a fresh one (an address registers
once)."""
STARTUP_TIMEOUT = 300.0
"""Seconds every process of the stack gets to report ready (eleven processes start at once: slow on a busy
machine)."""
SERVICE_ENV: dict[str, dict[str, str]] = {
    "auth": {"REGISTRATION_EMAIL_VERIFICATION": "false"},
    "notification": {"RECIPIENT_EMAIL_LIMIT": "1000"},
}
"""Test-only settings per service, on top of ``make run``'s development defaults."""
CSP_VIOLATION = re.compile(r"Content Security Policy|Refused to (execute|apply|load|connect|frame)", re.IGNORECASE)


# --- the stack -----------------------------------------------------------------------------------------------


@dataclass
class StackProcess:
    label: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Stack:
    """Every installed service (api and worker) and the console, as ``make run`` starts them, on ports moved
    by ``offset`` (free ones), against the session's Redis and MongoDB-wire servers."""

    console_url: str
    api_urls: dict[str, str]
    """``{service: base URL}`` of each service's API process (``http://127.0.0.1:<port>``)."""
    mail_dir: Path
    offset: int
    processes: list[StackProcess] = field(default_factory=list)
    _operators: list[str] = field(default_factory=lambda: list(OPERATOR_EMAILS))

    # calls to the services' public APIs (set-up of a test; the pages under test go through the console)

    def api(
        self, service: str, method: str, path: str, body: Any = None, token: str = "", *, expect: int | None = None
    ) -> tuple[int, Any]:
        """``method path`` on ``service``'s API (``path`` after its prefix, e.g. ``/login`` for auth):
        ``(status, decoded JSON or None)``; with ``expect`` a different status fails the test."""
        prefix = {"webhook": "webhooks", "notification": "notifications", "workflow": "workflows", "report": "reports"}
        url = f"{self.api_urls[service]}/api/v1/{prefix.get(service, service)}{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - a local URL we built
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=15) as resp:  # noqa: S310
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        answer = json.loads(raw) if raw else None
        if expect is not None:
            assert status == expect, f"{method} {url} answered {status}: {answer}"
        return status, answer

    def wait_for_mail(self, to: str, subject: str = "", timeout: float = 30.0) -> EmailMessage:
        """The newest message to ``to`` (whose subject contains ``subject``) the notification service gave the
        local mail catcher; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = []
            for path in sorted(self.mail_dir.glob("*.eml")) if self.mail_dir.exists() else []:
                msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                assert isinstance(msg, EmailMessage)
                if to.lower() in str(msg.get("To", "")).lower() and subject.lower() in str(msg["Subject"]).lower():
                    found.append(msg)
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no mail to {to} (subject ~ {subject!r}) within {timeout}s")
            time.sleep(0.2)

    def take_operator_email(self) -> str:
        """A fresh address of ``CONSOLE_OPERATOR_EMAILS``."""
        return self._operators.pop(0)

    def logs(self, label: str = "") -> str:
        """The logs of the stack's processes (or of those whose label contains ``label``), for failures."""
        out = []
        for p in self.processes:
            if label in p.label and p.log_path.exists():
                out.append(f"--- {p.label}\n{p.log_path.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM to every process at once (each drains), SIGKILL to any still running 15 s later."""
        for p in self.processes:
            if p.proc.poll() is None:
                p.proc.terminate()
        deadline = time.monotonic() + 15
        for p in self.processes:
            try:
                p.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait(5)


def link_in(msg: EmailMessage, path: str) -> str:
    """The first link of ``msg``'s text whose path is ``path`` (e.g. the invite's ``/invites/accept?token=…``)."""
    part = msg.get_body(preferencelist=("plain", "html"))
    assert part is not None, "mail without a body"
    text = part.get_content()
    for url in re.findall(r"https?://[^\s\"'<>]+", text):
        if urlsplit(url).path == path:
            return str(url)
    raise AssertionError(f"no {path} link in the mail:\n{text}")


def _planned_ports(offset: int, specs: list[Any]) -> list[int]:
    ports = []
    for spec in specs:
        ports += [port for _role, port in roles(spec, _default_port(spec) + offset)]
        shift = _PortShift(offset)
        dev_defaults(spec, offset, Path("."), shift)
        ports += shift.ports
    return ports


def _free_offset(specs: list[Any]) -> int:
    """An offset that moves every port of the stack onto a free one (like ``NOVAPULSE_PORT_OFFSET``)."""
    for _ in range(200):
        offset = random.randrange(10_000, 23_000)  # below the ephemeral range (32768+): no client port lands there
        if not any(port_open(p) for p in _planned_ports(offset, specs)):
            return offset
    raise RuntimeError("no free port offset found for the console test stack")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + READY_PATH, timeout=1) as resp:  # noqa: S310 - local URL we built
            return bool(resp.status == 200)
    except Exception:
        return False


def start_stack(redis_url: str, mongo_url: str, run_dir: Path, names: str) -> Stack:
    """Start every installed service's ``api`` and ``worker`` and the console like ``make run`` does
    (``python -m <package> <role>``, the development defaults of :mod:`novapulse_devkit.stack` moved by a free
    port offset), with the test settings: verification mail off, rate limits off, ``OPERATIONS_TOKEN`` and
    ``CONSOLE_OPERATOR_EMAILS`` set, one database per service and one bus namespace (``names``)."""
    specs = discover()
    offset = _free_offset(specs)
    data_dir = run_dir / "stack"
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    caller = dict(os.environ)
    for key in ("REDIS_URL", "MONGO_URL", "MONGO_DB", "HTTP_PORT", "WORKER_HTTP_PORT", "EVENTS_NAMESPACE"):
        caller.pop(key, None)
    common = {
        "REDIS_URL": redis_url,
        "MONGO_URL": mongo_url,
        "EVENTS_NAMESPACE": names,
        "RATE_LIMIT_ENABLED": "false",
        "OPERATIONS_TOKEN": OPERATIONS_TOKEN,
        "CONSOLE_OPERATOR_EMAILS": ",".join(OPERATOR_EMAILS),
        "LOG_LEVEL": "WARNING",
        "SHUTDOWN_TIMEOUT": "5",
    }
    console_url = "".join(f"http://127.0.0.1:{_default_port(s) + offset}" for s in specs if s.name == "console")
    stack = Stack(console_url=console_url, api_urls={}, mail_dir=data_dir / "mail", offset=offset)
    for spec in specs:
        api_port = _default_port(spec) + offset
        # no gateway here: mailed links open the console itself
        defaults = dev_defaults(spec, offset, data_dir, _PortShift(offset), public=console_url)
        for role, port in roles(spec, api_port):
            env = process_env(defaults, caller, {})
            env.update(common)
            env.update(SERVICE_ENV.get(spec.name, {}))
            env.update(
                {
                    "MONGO_DB": f"{names}_{spec.name}"[:60],
                    "HTTP_PORT": str(api_port),
                    "WORKER_HTTP_PORT": str(port),
                }
            )
            label = f"{spec.name}-{role}"
            log_path = data_dir / "logs" / f"{label}.log"
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", spec.package, role],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            stack.processes.append(StackProcess(label, f"http://127.0.0.1:{port}", proc, log_path))
        if spec.name != "console":
            stack.api_urls[spec.name] = f"http://127.0.0.1:{api_port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    pending = list(stack.processes)
    while pending:
        for p in list(pending):
            if p.proc.poll() is not None:
                stack.stop()
                raise RuntimeError(f"{p.label} exited with {p.proc.returncode}:\n{stack.logs(p.label)}")
            if _ready(p.url):
                pending.remove(p)
        if pending and time.monotonic() > deadline:
            stack.stop()
            labels = ", ".join(p.label for p in pending)
            raise RuntimeError(f"not ready after {STARTUP_TIMEOUT}s: {labels}\n{stack.logs()}")
        time.sleep(0.1)
    return stack


# --- accounts ------------------------------------------------------------------------------------------------


@dataclass
class Account:
    """A user made through auth's API; ``totp_secret`` and ``recovery_codes`` once MFA is on."""

    email: str
    password: str
    name: str
    org_name: str
    user_id: str = ""
    org_id: str = ""
    role: str = "owner"
    totp_secret: str = ""
    recovery_codes: list[str] = field(default_factory=list)
    last_step: int = -1

    def code(self) -> str:
        """A TOTP code auth has not accepted yet (RFC 6238 §5.2: each time step once; auth allows one step of
        drift, so up to three codes a step — beyond that this waits for the next step)."""
        assert self.totp_secret, "MFA is not on for this account"
        while True:
            now = int(time.time() // 30)
            step = max(self.last_step + 1, now - 1)
            if step <= now + 1:
                self.last_step = step
                return str(pyotp.TOTP(self.totp_secret).at(step * 30))
            time.sleep(1.0)


def wrong_code(acct: Account) -> str:
    """Six digits that are none of ``acct``'s codes auth would accept now (spends no time step)."""
    now = int(time.time() // 30)
    valid = {pyotp.TOTP(acct.totp_secret).at(step * 30) for step in range(now - 2, now + 3)}
    return next(c for c in ("000000", "111111", "222222", "333333", "444444", "555555") if c not in valid)


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def register_org(stack: Stack, email: str | None = None, org_name: str = "Acme Rockets") -> Account:
    """A new organisation and its owner (auth ``POST /register``; verification mail is off in the stack)."""
    acct = Account(email or unique_email("owner"), PASSWORD, "Olive Owner", org_name)
    body = {"email": acct.email, "password": PASSWORD, "name": acct.name, "organization": org_name}
    _status, answer = stack.api("auth", "POST", "/register", body, expect=201)
    acct.user_id, acct.org_id = answer["user"]["id"], answer["organization"]["id"]
    return acct


def api_token(stack: Stack, acct: Account) -> str:
    """An access token of ``acct`` (auth ``POST /login``, and the MFA step when MFA is on)."""
    _s, answer = stack.api("auth", "POST", "/login", {"email": acct.email, "password": acct.password}, expect=200)
    if answer.get("mfa_required"):
        body = {"mfa_token": answer["mfa_token"], "code": acct.code()}
        _s, answer = stack.api("auth", "POST", "/mfa/verify", body, expect=200)
    return str(answer["access_token"])


def enable_mfa(stack: Stack, acct: Account) -> None:
    """Turn on ``acct``'s MFA through auth's API (set-up, then a code): keeps the secret and recovery codes."""
    token = api_token(stack, acct)
    _s, setup = stack.api("auth", "POST", "/mfa/setup", token=token, expect=200)
    acct.totp_secret = parse_qs(urlsplit(setup["otpauth_uri"]).query)["secret"][0]
    _s, answer = stack.api("auth", "POST", "/mfa/enable", {"code": acct.code()}, token, expect=200)
    acct.recovery_codes = list(answer["recovery_codes"])


def add_member(stack: Stack, owner: Account, role: str = "member", name: str = "Mia Member") -> Account:
    """Invite a new user into ``owner``'s organisation with ``role`` and accept through the mailed link's
    token (the invite mail really goes through the notification service to the mail catcher)."""
    acct = Account(unique_email(role), PASSWORD, name, owner.org_name, role=role, org_id=owner.org_id)
    token = api_token(stack, owner)
    stack.api("auth", "POST", "/invites", {"email": acct.email, "role": role}, token, expect=201)
    link = link_in(stack.wait_for_mail(acct.email), INVITE_ACCEPT_PATH)
    invite_token = parse_qs(urlsplit(link).query)["token"][0]
    body = {"token": invite_token, "name": name, "password": PASSWORD}
    _s, answer = stack.api("auth", "POST", "/invites/accept", body, expect=201)
    acct.user_id = answer["user"]["id"]
    return acct


@dataclass
class SignedIn:
    """What the ``signed_in_page`` fixture gives: a signed-in browser page and who it is — ``account`` (the
    user signed in) and ``owner`` (their organisation's owner; the same account when ``role="owner"``)."""

    page: Page
    account: Account
    owner: Account
    stack: Stack


# --- the browser ---------------------------------------------------------------------------------------------


def chromium_missing() -> str:
    """Why the browser tests cannot run here (empty when they can)."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"{CHROMIUM} is not installed (make browser-tools installs Debian's chromium when run as root)"
    return ""


_CONSOLE_LOGS: dict[int, list[str]] = {}


def watch(page: Page) -> Page:
    """Record ``page``'s console errors and uncaught exceptions (see :func:`console_errors`)."""
    log: list[str] = []
    _CONSOLE_LOGS[id(page)] = log
    page.on("console", lambda msg: log.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: log.append(f"uncaught: {exc}"))
    return page


def console_errors(page: Page) -> list[str]:
    """The console errors and uncaught exceptions ``page`` has logged so far."""
    return list(_CONSOLE_LOGS.get(id(page), []))


def csp_violations(page: Page) -> list[str]:
    """The console errors of ``page`` that are Content-Security-Policy violations."""
    return [m for m in console_errors(page) if CSP_VIOLATION.search(m)]


def new_page(browser: Browser, stack: Stack, **context_options: Any) -> Page:
    """A page in a fresh context (its own cookies) on the console's origin, its console watched."""
    context: BrowserContext = browser.new_context(base_url=stack.console_url, viewport=VIEWPORT, **context_options)
    context.set_default_timeout(15_000)
    return watch(context.new_page())


def sign_in(page: Page, acct: Account, *, recovery_code: str = "") -> None:
    """Sign ``acct`` in through the console's pages (the MFA step with a fresh code, or ``recovery_code``)."""
    page.goto("/sign-in")
    page.get_by_label("E-mail address").fill(acct.email)
    page.get_by_label("Password").fill(acct.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    if urlsplit(page.url).path == "/sign-in/mfa":
        if recovery_code:
            page.get_by_text("Use a recovery code instead").click()
            page.get_by_label("Recovery code").fill(recovery_code)
            page.get_by_role("button", name="Use recovery code").click()
        else:
            page.get_by_label("Code from your authenticator app").fill(acct.code())
            page.get_by_role("button", name="Verify").click()
        page.wait_for_load_state()
    path = urlsplit(page.url).path
    assert not path.startswith("/sign-in"), f"sign-in failed, still at {page.url}: {page.inner_text('main')}"


def check_accessibility(page: Page, *, disable: tuple[str, ...] = ()) -> None:
    """Run axe-core on what ``page`` shows now and fail on any ``serious`` or ``critical`` violation, listing
    them readably. The DOM is copied into a context that bypasses the CSP (axe must be injected as a script,
    which ``script-src 'self'`` rightly refuses) and served at the same URL, so pages shown once (after a
    POST) are checked too; ``disable``: axe rule ids to leave out (say why where you call it)."""
    if not AXE_JS.exists():
        pytest.skip(f"axe-core not installed ({AXE_JS}): run make browser-tools")
    html = page.content()
    url = page.url
    browser = page.context.browser
    assert browser is not None
    context = browser.new_context(bypass_csp=True, viewport=VIEWPORT)
    try:
        probe = context.new_page()
        probe.route(url, lambda route: route.fulfill(status=200, content_type="text/html; charset=utf-8", body=html))
        probe.goto(url)
        probe.add_script_tag(path=str(AXE_JS))
        options = {"resultTypes": ["violations"], "rules": {rule: {"enabled": False} for rule in disable}}
        result = probe.evaluate("async (options) => await axe.run(document, options)", options)
    finally:
        context.close()
    bad = [v for v in result["violations"] if v.get("impact") in ("serious", "critical")]
    if bad:
        lines = [f"axe-core: {len(bad)} serious/critical violation(s) on {url}:"]
        for v in bad:
            lines.append(f"- [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
            for node in v["nodes"][:5]:
                lines.append(f"    at {', '.join(map(str, node['target']))}: {node.get('failureSummary', '')}")
        pytest.fail("\n".join(lines), pytrace=False)


def screenshot(page: Page, name: str) -> Path | None:
    """With ``CONSOLE_SCREENSHOTS=1`` (``make console-screenshots``): a full-page PNG of ``page`` as
    ``docs/console/<name>.png``; otherwise nothing."""
    if os.environ.get("CONSOLE_SCREENSHOTS") != "1":
        return None
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path


def path_of(page: Page) -> str:
    """The path of the page's URL (``/account/mfa``)."""
    return urlsplit(page.url).path
