"""The webhooks portal over HTTP against real processes: an owner registers an endpoint aimed at a real local
receiver with the event-type picker, sends a test event, finds the delivered message in the log (filters,
lookup by id) with its attempts, resends it, reveals and rotates the secret, edits, disables and enables the
endpoint, recovers failed messages (counted first) and deletes it — each change checked on the webhook
API. Another organisation cannot open or touch any of it by id; a form without the CSRF token is refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from helpers_pages import Api, Browser, Receiver, invite_member, own_loop

from novapulse_devkit.testing import wait_until

pytestmark = pytest.mark.e2e

HOOKS = "/api/v1/webhooks"


async def owner(visitor, pages_stack, http, email: str) -> tuple[Browser, Api]:
    b: Browser = await visitor()
    await b.register(email)
    await b.sign_in(email)
    api = await Api.login(http, pages_stack.url("auth-api"), pages_stack.url("webhook-api") + HOOKS, email)
    return b, api


async def message_status(b: Browser, message_id: str, wanted: str) -> str:
    page = await b.get(f"/webhooks/messages/{message_id}")
    return page.by_id("message-status") if wanted in page.by_id("message-status") else ""


@own_loop
async def test_endpoint_lifecycle_test_event_log_attempts_resend_secret_recover(
    visitor, pages_stack, http, receiver: Receiver, email: str
) -> None:
    b, api = await owner(visitor, pages_stack, http, email)

    home = await b.get("/")
    assert 'href="/webhooks"' in home.text
    assert 'href="/bus"' not in home.text

    form = await b.get("/webhooks/endpoints/new")
    assert form.status == 200
    assert 'name="event_types" value="webhook.test"' in form.text  # the picker lists the catalogue
    assert 'value="invite.delivery_requested"' not in form.text  # private types are not offered
    created = await b.post(
        "/webhooks/endpoints",
        [
            ("url", receiver.url),
            ("description", "orders"),
            ("event_types", "webhook.test"),
            ("event_types", "user.registered"),
            ("other_types", "invoice.*"),
            ("headers", "X-Team: billing"),
            ("rate_limit", "7"),
        ],
        form,
    )
    assert created.status == 200, created.flash()
    assert "/webhooks/endpoints/ep_" in created.url, created.flash()
    endpoint_id = created.url.rsplit("/", 1)[1]
    state = await api.ok("GET", f"/endpoints/{endpoint_id}")
    assert state["url"] == receiver.url
    assert state["rate_limit"] == 7
    assert state["event_types"] == ["invoice.*", "user.registered", "webhook.test"]
    assert state["headers"] == {"X-Team": "billing"}
    assert "whsec_" not in created.text  # the secret is only shown when asked for

    # a bad URL comes back as the form with the API's reason
    refused = await b.post("/webhooks/endpoints", {"url": "ftp://example.com/x"}, form)
    assert refused.status == 422
    assert 'aria-invalid="true"' in refused.text

    # send a test event: the receiver gets it, the message page shows it delivered with its attempt
    sent = await b.post(f"/webhooks/endpoints/{endpoint_id}/test", {}, created)
    assert "/webhooks/messages/msg_" in sent.url
    message_id = sent.url.rsplit("/", 1)[1]
    await wait_until(lambda: len(receiver.seen) == 1, timeout=30, message="the test event delivered")
    assert receiver.seen[0][0]["webhook-id"] == message_id

    async def delivered() -> bool:
        return bool(await message_status(b, message_id, "succeeded"))

    await wait_until(delivered, timeout=30, message="the message page says succeeded")
    page = await b.get(f"/webhooks/messages/{message_id}")
    assert "Attempt 1" in page.text
    assert "HTTP 200" in page.text
    assert "webhook-signature" in page.text
    assert "receiver says 200" in page.text
    assert " ms" in page.text
    assert "webhook.test" in page.text

    # the log: filters and lookup by id
    log = await b.get(f"/webhooks/messages?endpoint_id={endpoint_id}&status=succeeded&http_status=200")
    assert f"/webhooks/messages/{message_id}" in log.text
    for miss in ("http_status=500", "status=failed", "event_type=user.registered"):
        assert f"/webhooks/messages/{message_id}" not in (await b.get(f"/webhooks/messages?{miss}")).text
    since = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert message_id not in (await b.get(f"/webhooks/messages?since={since}")).text
    bad = await b.get("/webhooks/messages?http_status=42")
    assert "HTTP status: a number from 100 to 599" in bad.text
    found = await b.get(f"/webhooks/messages?id={message_id}")
    assert found.path == f"/webhooks/messages/{message_id}"

    # resend: the same webhook-id again
    resent = await b.post(f"/webhooks/messages/{message_id}/resend", {}, page)
    assert "being sent again" in " ".join(resent.flash())
    await wait_until(lambda: len(receiver.seen) == 2, timeout=30, message="the resend delivered")
    assert receiver.seen[1][0]["webhook-id"] == message_id

    # the secret: revealed on demand (a fragment for htmx), rotated
    secret = (await api.ok("GET", f"/endpoints/{endpoint_id}/secret"))["secret"]
    revealed = await b.get(f"/webhooks/endpoints/{endpoint_id}/secret", **{"HX-Request": "true"})
    assert secret in revealed.text
    assert "<html" not in revealed.text
    rotated = await b.post(f"/webhooks/endpoints/{endpoint_id}/secret/rotate", {"grace_hours": "1"}, created)
    assert "A new secret signs" in " ".join(rotated.flash())
    after = await api.ok("GET", f"/endpoints/{endpoint_id}/secret")
    assert after["secret"] != secret
    assert [p["secret"] for p in after["previous"]] == [secret]

    # edit: headers and rate limit (empty: no limit)
    edit = await b.get(f"/webhooks/endpoints/{endpoint_id}/edit")
    assert "X-Team: billing" in edit.text
    assert 'value="7"' in edit.text
    saved = await b.post(
        f"/webhooks/endpoints/{endpoint_id}/edit",
        [("url", receiver.url), ("event_types", "webhook.test"), ("headers", "X-Team: ops\nX-Env: test")],
        edit,
    )
    assert "The endpoint is saved." in saved.flash()
    state = await api.ok("GET", f"/endpoints/{endpoint_id}")
    assert state["headers"] == {"X-Team": "ops", "X-Env": "test"}
    assert state["rate_limit"] is None
    assert state["event_types"] == ["webhook.test"]

    # disable, enable
    await b.post(f"/webhooks/endpoints/{endpoint_id}/disable", {}, saved)
    assert (await api.ok("GET", f"/endpoints/{endpoint_id}"))["enabled"] is False
    await b.post(f"/webhooks/endpoints/{endpoint_id}/enable", {}, saved)
    assert (await api.ok("GET", f"/endpoints/{endpoint_id}"))["enabled"] is True

    # recover: a failed message, counted first, then sent again
    receiver.status = 500
    failing = await b.post(f"/webhooks/endpoints/{endpoint_id}/test", {}, saved)
    failed_id = failing.url.rsplit("/", 1)[1]

    async def failed() -> bool:
        return bool(await message_status(b, failed_id, "failed"))

    await wait_until(failed, timeout=30, message="the message failed")
    assert f"/webhooks/messages/{failed_id}" in (await b.get("/webhooks/messages?http_status=500")).text
    receiver.status = 200
    since = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M")
    counted = await b.post(f"/webhooks/endpoints/{endpoint_id}/recover", {"since": since}, saved)
    assert counted.by_id("recover-count") == "1 failed message would be sent again."
    assert (await api.ok("GET", f"/messages/{failed_id}"))["status"] == "failed"  # counting changed nothing
    done = await b.post(
        f"/webhooks/endpoints/{endpoint_id}/recover",
        {"since": re.search(r'name="since" value="([^"]+)"', counted.text)[1], "confirm": "yes"},  # type: ignore[index]
        counted,
    )
    assert "1 failed messages are being sent again." in done.flash()

    async def recovered() -> bool:
        return bool(await message_status(b, failed_id, "succeeded"))

    await wait_until(recovered, timeout=30, message="the recovered message delivered")

    # delete
    gone = await b.post(f"/webhooks/endpoints/{endpoint_id}/delete", {}, saved)
    assert gone.path == "/webhooks"
    assert (await api.call("GET", f"/endpoints/{endpoint_id}"))[0] == 404


@own_loop
async def test_another_organisation_cannot_open_or_change_by_id_and_csrf_is_required(
    visitor, pages_stack, http, receiver: Receiver, email: str
) -> None:
    a, api_a = await owner(visitor, pages_stack, http, email)
    endpoint = await api_a.ok("POST", "/endpoints", {"url": receiver.url})
    sent = await api_a.ok("POST", f"/endpoints/{endpoint['id']}/test")
    message_id = sent["message_id"]
    await wait_until(lambda: len(receiver.seen) == 1, timeout=30, message="delivered")

    b, _api_b = await owner(visitor, pages_stack, http, "other-" + email)
    for path in (
        f"/webhooks/endpoints/{endpoint['id']}",
        f"/webhooks/endpoints/{endpoint['id']}/edit",
        f"/webhooks/endpoints/{endpoint['id']}/secret",
        f"/webhooks/messages/{message_id}",
        "/webhooks/endpoints/..%2F..%2Fevents",
    ):
        page = await b.get(path)
        assert page.status == 404, (path, page.status)
        assert endpoint["url"] not in page.text
    own = await b.get("/webhooks")
    for path in (
        f"/webhooks/endpoints/{endpoint['id']}/delete",
        f"/webhooks/endpoints/{endpoint['id']}/disable",
        f"/webhooks/messages/{message_id}/resend",
    ):
        assert (await b.post(path, {}, own)).status == 404, path
    assert (await api_a.ok("GET", f"/endpoints/{endpoint['id']}"))["enabled"] is True
    assert len((await api_a.ok("GET", "/messages"))["items"]) == 1
    assert endpoint["id"] not in own.text

    # without the CSRF token (or from another site) the change is refused, and nothing changes
    async with a.http.post(a.base + f"/webhooks/endpoints/{endpoint['id']}/disable", data={}) as resp:
        assert resp.status == 403
    page = await a.get("/webhooks")
    async with a.http.post(
        a.base + f"/webhooks/endpoints/{endpoint['id']}/disable",
        data={"csrf_token": page.csrf},
        headers={"Origin": "https://evil.example"},
    ) as resp:
        assert resp.status == 403
    assert (await api_a.ok("GET", f"/endpoints/{endpoint['id']}"))["enabled"] is True


@own_loop
async def test_a_member_reads_the_portal_but_every_change_is_hidden_and_refused(
    visitor, pages_stack, http, receiver: Receiver, email: str
) -> None:
    _owner, api = await owner(visitor, pages_stack, http, email)
    endpoint = await api.ok("POST", "/endpoints", {"url": receiver.url, "headers": {"Authorization": "Bearer s3cr3t"}})
    sent = await api.ok("POST", f"/endpoints/{endpoint['id']}/test")
    member_email = "member-" + email
    await invite_member(
        http, pages_stack.url("auth-api"), pages_stack.redis_url, pages_stack.names, email, member_email, "member"
    )
    m: Browser = await visitor()
    await m.sign_in(member_email)
    listing = await m.get("/webhooks")
    assert endpoint["id"] in listing.text
    assert "Add an endpoint" not in listing.text
    page = await m.get(f"/webhooks/endpoints/{endpoint['id']}")
    assert page.status == 200
    assert "s3cr3t" not in page.text  # credentials in custom headers are masked for members
    for hidden in ("Send a test event", "Reveal the secret", "Rotate", "Delete", "Count them"):
        assert hidden not in page.text, hidden
    message = await m.get(f"/webhooks/messages/{sent['message_id']}")
    assert message.status == 200
    assert ">Resend<" not in message.text
    for path in (f"/webhooks/endpoints/{endpoint['id']}/secret", "/webhooks/endpoints/new"):
        assert (await m.get(path)).status == 403, path
    for path in (f"/webhooks/endpoints/{endpoint['id']}/disable", f"/webhooks/endpoints/{endpoint['id']}/test"):
        assert (await m.post(path, {}, listing)).status == 403, path
    assert (await api.ok("GET", f"/endpoints/{endpoint['id']}"))["enabled"] is True
    # the workflow and report pages hide their changes from members too
    assert "New definition" not in (await m.get("/workflows")).text
