"""Send-time guard and HTTP behaviour of one attempt, against a real receiver on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import time

import pytest
from helpers_webhook import Receiver

from novapulse_webhook.sender import Sender
from novapulse_webhook.ssrf import AddressPolicy

pytestmark = pytest.mark.integration
OPEN = AddressPolicy((ipaddress.ip_network("127.0.0.0/8"),), allow_http=True)
CLOSED = AddressPolicy(allow_http=True)


async def test_loopback_refused_at_send_time_by_literal_and_by_name(receiver: Receiver) -> None:
    sender = Sender(CLOSED)
    try:
        by_ip = await sender.send(receiver.url("x"), {}, b"{}", 5)
        by_name = await sender.send(f"http://localhost:{receiver.port}/x", {}, b"{}", 5)
        by_decimal = await sender.send(f"http://2130706433:{receiver.port}/x", {}, b"{}", 5)
    finally:
        await sender.close()
    for result in (by_ip, by_name, by_decimal):
        assert result.refused, result
        assert result.status is None
    assert receiver.seen == []


async def test_allowed_range_delivers_and_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.set("moved", status=302, headers={"Location": "/ok"})
    sender = Sender(OPEN)
    try:
        ok = await sender.send(f"http://localhost:{receiver.port}/ok", {"X-A": "1"}, b'{"a":1}', 5)
        moved = await sender.send(receiver.url("moved"), {}, b"{}", 5)
    finally:
        await sender.close()
    assert ok.status == 200
    assert ok.body == "ok"
    assert ok.error is None
    assert moved.status == 302
    assert [s.path for s in receiver.seen] == ["/ok", "/moved"]
    assert receiver.seen[0].headers["X-A"] == "1"
    assert receiver.seen[0].body == b'{"a":1}'


async def test_hanging_receiver_times_out(receiver: Receiver) -> None:
    receiver.set("hang", hang=True)
    sender = Sender(OPEN)
    started = time.monotonic()
    try:
        result = await sender.send(receiver.url("hang"), {}, b"{}", 1.0)
    finally:
        await sender.close()
    assert result.status is None
    assert "timed out" in (result.error or "")
    assert time.monotonic() - started < 5


async def test_unreachable_port_is_a_failed_attempt() -> None:
    from novapulse_runtime.devservers import free_port

    sender = Sender(OPEN)
    try:
        result = await sender.send(f"http://127.0.0.1:{free_port()}/x", {}, b"{}", 2)
    finally:
        await sender.close()
    assert result.status is None
    assert result.error
    assert not result.refused
