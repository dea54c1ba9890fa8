"""Send-time guard and HTTP behaviour of one attempt, against a real receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import pytest
from helpers_webhook import Receiver

from novapulse_webhook.sender import AttemptResult, Sender
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
    from novapulse_devkit.servers import free_port

    sender = Sender(OPEN)
    try:
        result = await sender.send(f"http://127.0.0.1:{free_port()}/x", {}, b"{}", 2)
    finally:
        await sender.close()
    assert result.status is None
    assert result.error
    assert not result.refused


async def _raw_server(behaviour: str) -> tuple[asyncio.AbstractServer, int]:
    """A TCP server that misbehaves: garbage instead of HTTP, a huge body, or a body dripped slowly."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            if behaviour == "garbage":
                writer.write(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
            elif behaviour == "huge":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n")
                for _ in range(200):
                    writer.write(b"x" * 65536)
                    await writer.drain()
            elif behaviour == "drip":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                for _ in range(1000):
                    writer.write(b"x")
                    await writer.drain()
                    await asyncio.sleep(0.1)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("behaviour", ["garbage", "huge", "drip"])
async def test_misbehaving_receivers_are_bounded_attempts(behaviour: str) -> None:
    server, port = await _raw_server(behaviour)
    sender = Sender(OPEN)
    started = time.monotonic()
    try:
        result = await sender.send(f"http://127.0.0.1:{port}/x", {}, b"{}", 2.0)
    finally:
        await sender.close()
        server.close()
    assert time.monotonic() - started < 6
    if behaviour == "huge":
        assert result.status == 200  # a 2xx with a huge body succeeds, but only 64 KiB is read and 4 KiB kept
        assert result.body is not None
        assert len(result.body) <= 4096
    elif behaviour == "drip":
        assert result.status is None
        assert "timed out" in (result.error or "")
    else:
        assert result.status is None
        assert result.error


async def test_tls_failure_is_a_failed_attempt(receiver: Receiver) -> None:
    sender = Sender(OPEN)
    try:
        result = await sender.send(f"https://127.0.0.1:{receiver.port}/x", {}, b"{}", 3)
    finally:
        await sender.close()
    assert result.status is None
    assert result.error
    assert not result.refused


async def _canned(answer: bytes) -> tuple[asyncio.AbstractServer, int]:
    """A TCP receiver that answers every request with exactly ``answer`` and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _send_to(answer: bytes) -> AttemptResult:
    server, port = await _canned(answer)
    sender = Sender(OPEN)
    try:
        return await sender.send(f"http://127.0.0.1:{port}/x", {}, b"{}", 3.0)
    finally:
        await sender.close()
        server.close()


def _storable(text: str | None) -> None:
    """Text a receiver sent us must be storable in MongoDB (BSON strings are UTF-8: no lone surrogates)."""
    if text is not None:
        text.encode("utf-8")


@pytest.mark.parametrize(
    ("answer", "status", "retry_after", "body"),
    [
        (b"HTTP/1.1 429 Too Many\r\nRetry-After: \xc2\xb2\r\nContent-Length: 0\r\n\r\n", 429, "\u00b2", ""),
        (b"HTTP/1.1 429 X\r\nRetry-After: \xff\xfe\r\nContent-Length: 0\r\n\r\n", 429, "\ufffd\ufffd", ""),
        (
            b"HTTP/1.1 503 X\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\nContent-Length: 0\r\n\r\n",
            503,
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "",
        ),
        (b"HTTP/1.1 500 X\r\nContent-Length: 4\r\n\r\n\xff\xfeok", 500, None, "\ufffd\ufffdok"),  # not UTF-8
        (  # declared charset honoured (RFC 9110 8.3.1)
            b"HTTP/1.1 400 X\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Length: 3\r\n\r\n\xe9t\xe9",
            400,
            None,
            "\u00e9t\u00e9",
        ),
        (  # an unknown or non-text charset falls back to UTF-8 with replacement
            b"HTTP/1.1 400 X\r\nContent-Type: text/plain; charset=base64\r\nContent-Length: 3\r\n\r\nab\xff",
            400,
            None,
            "ab\ufffd",
        ),
        (
            b"HTTP/1.1 400 X\r\nContent-Type: text/plain; charset=no-such-codec\r\nContent-Length: 2\r\n\r\nab",
            400,
            None,
            "ab",
        ),
    ],
)
async def test_peer_headers_and_bodies_in_any_encoding_are_decoded_without_raising(
    answer: bytes, status: int, retry_after: str | None, body: str
) -> None:
    result = await _send_to(answer)
    assert (result.status, result.retry_after, result.body, result.error) == (status, retry_after, body, None)
    _storable(result.retry_after)
    _storable(result.body)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 abc Bad\r\n\r\n",  # status line without a number
        b"HTTP/1.1 99999 Big\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/9.9 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999999\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 11\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n",
        b"HTTP/1.1 302 Found\r\nLocation: http://\xff\xfe/\r\nContent-Length: 0\r\n\r\n",  # redirect: never followed
        b"HTTP/1.1 200 OK\r\n\xff\xfe: \xff\r\nContent-Length: 0\r\n\r\n",
        b"\xff\xfe\xfd\r\n\r\n",
    ],
)
async def test_broken_status_lines_framing_and_redirects_are_failed_attempts_not_exceptions(answer: bytes) -> None:
    result = await _send_to(answer)
    # Either aiohttp reads a status (then it is the receiver's answer) or the attempt failed with a reason.
    assert result.status is not None or result.error, result
    if result.status is None:
        assert not result.refused
    _storable(result.error)
    _storable(result.body)
