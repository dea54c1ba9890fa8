"""The payload bytes are strict JSON both ways (RFC 8259: no NaN/Infinity)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from novapulse_runtime.jsonstrict import InvalidJSON
from novapulse_webhook.fanout import payload_body
from novapulse_webhook.service import message_out, request_fingerprint

pytestmark = pytest.mark.unit
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {"deep": [1, math.nan]}, object()])
def test_payload_refuses_what_strict_json_cannot_hold(bad: object) -> None:
    with pytest.raises(InvalidJSON):
        payload_body("a.b", {"x": bad}, WHEN)


def test_payload_is_compact_and_keeps_unicode() -> None:
    assert payload_body("a.b", {"r": 0.5, "t": "é"}, WHEN) == (
        '{"type":"a.b","timestamp":"2026-01-01T00:00:00Z","data":{"r":0.5,"t":"é"}}'
    )


def _doc(body: str) -> dict[str, object]:
    return {
        "_id": "msg_1",
        "endpoint_id": "ep_1",
        "event_id": "evt_1",
        "event_type": "a.b",
        "status": "succeeded",
        "created_at": WHEN,
        "updated_at": WHEN,
        "body": body,
    }


def test_stored_bodies_are_read_back_strictly() -> None:
    assert message_out(_doc('{"data":{"r":0.5}}'), with_payload=True).payload == {"data": {"r": 0.5}}
    for bad in ('{"data":{"r":NaN}}', '{"data":{"r":1e999}}', '{"data":{"r":Infinity}}'):
        # a body stored before payloads were strict: not shown as JSON that would carry NaN/Infinity
        assert message_out(_doc(bad), with_payload=True).payload is None


def test_request_fingerprint_ignores_key_order_only() -> None:
    a = request_fingerprint("a.b", {"x": 1, "y": {"p": [1, 2], "q": None}})
    assert a == request_fingerprint("a.b", {"y": {"q": None, "p": [1, 2]}, "x": 1})
    assert a != request_fingerprint("a.b", {"x": 1, "y": {"p": [2, 1], "q": None}})
    assert a != request_fingerprint("a.c", {"x": 1, "y": {"p": [1, 2], "q": None}})
    assert a != request_fingerprint("a.b", {"x": 1.0, "y": {"p": [1, 2], "q": None}})
