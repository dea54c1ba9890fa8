"""The webhooks portal and the event-bus pages in a real browser (Debian chromium through Playwright): an owner
creates an endpoint aimed at a real local receiver with the event-type picker, reveals the secret, sends a
test event, sees the delivered message and its attempts, resends it and counts failed messages to recover;
another organisation gets 404 for that endpoint and message; an operator replays a dead letter; a tenant
gets 404 on the bus pages and no entry for them. Each page passes the axe-core check; screenshots with
``CONSOLE_SCREENSHOTS=1``."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from helpers_console import OPERATIONS_TOKEN, Stack, check_accessibility, path_of, screenshot
from playwright.sync_api import Page, expect
from redis import Redis

from novapulse_devkit.testing import Servers


class Receiver:
    """A real HTTP server in a thread, recording each request's headers; answers ``status``."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.status = 200
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.seen.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(owner.status)
                body = f"receiver says {owner.status}".encode()
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            assert time.monotonic() < deadline, f"the receiver got {len(self.seen)} requests, not {count}"
            time.sleep(0.1)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def accept_dialogs(page: Page) -> None:
    """Say yes to the ``data-confirm`` questions (Playwright dismisses dialogs by default)."""
    page.on("dialog", lambda dialog: dialog.accept())


def reload_until(page: Page, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in page.inner_text("main"):
        assert time.monotonic() < deadline, f"{text!r} never showed on {page.url}"
        time.sleep(0.3)
        page.reload()


def test_endpoint_test_event_attempts_resend_and_other_organisation(
    signed_in_page: Callable[..., Any], receiver: Receiver
) -> None:
    owner = signed_in_page()
    page: Page = owner.page
    accept_dialogs(page)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
    assert path_of(page) == "/webhooks"
    check_accessibility(page)
    screenshot(page, "webhooks")

    page.get_by_role("button", name="Add an endpoint").click()
    check_accessibility(page)
    screenshot(page, "webhook-new-endpoint")
    page.get_by_label("URL", exact=True).fill(receiver.url)
    page.get_by_label("Description").fill("Local receiver")
    page.get_by_role("checkbox", name="webhook.test").check()
    page.get_by_label("Custom headers").fill("X-Team: billing")
    page.get_by_label("Rate limit").fill("10")
    page.get_by_role("button", name="Add the endpoint").click()
    expect(page.get_by_role("status").first).to_contain_text("The endpoint is registered.")
    endpoint_path = path_of(page)
    assert endpoint_path.startswith("/webhooks/endpoints/ep_")
    expect(page.locator("main")).not_to_contain_text("whsec_")
    page.get_by_role("button", name="Reveal the secret").click()
    expect(page.locator("#secret")).to_contain_text("whsec_")
    assert path_of(page) == endpoint_path  # revealed in place (htmx), not a new page
    check_accessibility(page)
    screenshot(page, "webhook-endpoint")

    page.get_by_role("button", name="Send a test event").click()
    assert path_of(page).startswith("/webhooks/messages/msg_")
    message_path = path_of(page)
    receiver.wait_for(1)
    reload_until(page, "succeeded")
    page.get_by_text("Request headers").first.click()
    expect(page.locator("main")).to_contain_text("webhook-signature")
    expect(page.locator("main")).to_contain_text("HTTP 200")
    check_accessibility(page)
    screenshot(page, "webhook-message")

    page.get_by_role("button", name="Resend").click()
    expect(page.get_by_role("status").first).to_contain_text("being sent again")
    receiver.wait_for(2)
    assert receiver.seen[1]["webhook-id"] == receiver.seen[0]["webhook-id"] == message_path.rsplit("/", 1)[1]

    page.get_by_role("link", name="Message log").click()
    page.get_by_label("HTTP status").fill("200")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("main")).to_contain_text(message_path.rsplit("/", 1)[1])
    check_accessibility(page)
    screenshot(page, "webhook-messages")
    page.get_by_label("Message id").fill(message_path.rsplit("/", 1)[1])
    page.get_by_role("button", name="Open").click()
    assert path_of(page) == message_path

    # recovery is counted before anything is resent (the stack's retry schedule is make run's, hours long,
    # so nothing has failed for good here: the server-side pages test covers the resend itself)
    page.goto(endpoint_path)
    page.get_by_label("Failed messages created since (UTC)").fill(time.strftime("%Y-%m-%dT00:00", time.gmtime()))
    page.get_by_role("button", name="Count them").click()
    expect(page.locator("#recover-count")).to_contain_text("0 failed messages would be sent again.")
    check_accessibility(page)
    screenshot(page, "webhook-recover")

    # another organisation: 404 for the endpoint and the message, by id
    other = signed_in_page()
    for path in (endpoint_path, message_path):
        response = other.page.goto(path)
        assert response is not None
        assert response.status == 404
        expect(other.page.locator("main")).not_to_contain_text(receiver.url)
    check_accessibility(other.page)


def test_operator_replays_a_dead_letter_tenant_gets_404(
    signed_in_page: Callable[..., Any], stack: Stack, servers: Servers
) -> None:
    tenant = signed_in_page()
    expect(tenant.page.get_by_role("link", name="Event bus")).to_have_count(0)
    for path in ("/bus", "/bus/live", "/bus/webhook/dead-letters"):
        response = tenant.page.goto(path)
        assert response is not None
        assert response.status == 404, path

    # a dead letter: an auth event whose data breaks its catalogue model (every group refuses it at once)
    event_id = str(uuid.uuid4())
    _s, streams = stack.api("webhook", "GET", "/events/streams", token=OPERATIONS_TOKEN, expect=200)
    auth_stream = next(s["name"] for s in streams["streams"] if s["name"].endswith(":events:auth"))
    redis = Redis.from_url(servers.redis_url, decode_responses=True)
    try:
        redis.xadd(
            auth_stream,
            {
                "id": event_id,
                "type": "user.registered",
                "source": "auth",
                "time": "2026-11-28T12:00:00Z",
                "schema": "1",
                "data": json.dumps({"nothing": "useful"}),
            },
        )
    finally:
        redis.close()

    def dead_entry() -> str:
        status, answer = stack.api("webhook", "GET", "/events/dead-letters?limit=1000", token=OPERATIONS_TOKEN)
        assert status == 200
        return next((d["entry_id"] for d in answer["items"] if d["event_id"] == event_id), "")

    deadline = time.monotonic() + 30
    while not dead_entry():
        assert time.monotonic() < deadline, "the event was never dead-lettered"
        time.sleep(0.2)
    entry_id = dead_entry()

    operator = signed_in_page(operator=True)
    page: Page = operator.page
    accept_dialogs(page)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Event bus").click()
    assert path_of(page) == "/bus"
    expect(page.locator("#streams")).to_contain_text(auth_stream)
    expect(page.locator("main")).to_contain_text(event_id)
    check_accessibility(page)
    screenshot(page, "bus")
    page.locator(f'form[action="/bus/webhook/dead-letters/{entry_id}/replay"] button').click()
    expect(page.get_by_role("status").first).to_contain_text(f"Dead letter {entry_id} of webhook replayed")
    assert dead_entry() != entry_id
