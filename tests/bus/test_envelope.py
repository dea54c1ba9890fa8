"""Unit tests of the envelope: ids, time format, encode/decode and the checks that feed dead letters."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from novapulse_runtime.bus import DeadReason, MalformedEntry, decode, encode, new_event_id
from novapulse_runtime.bus.constants import MAX_ENTRY_BYTES
from novapulse_runtime.bus.envelope import build, format_time
from novapulse_runtime.catalog.auth import UserRegistered

pytestmark = pytest.mark.unit

USER = UserRegistered(user_id="u1", org_id="o1", email="a@example.com", name="A", role="owner", organization="Acme")


def test_event_ids_are_uuidv7_and_strictly_increasing() -> None:
    ids = [new_event_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    ms = parsed.int >> 80
    assert abs(ms / 1000 - datetime.now(UTC).timestamp()) < 60


def test_time_is_rfc3339_utc_with_milliseconds() -> None:
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=UTC)) == "2026-01-02T03:04:05.678Z"
    plus_two = timezone(timedelta(hours=2))
    assert format_time(datetime(2026, 1, 2, 5, 4, 5, 678900, tzinfo=plus_two)) == "2026-01-02T03:04:05.678Z"
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(0)))) == "2026-01-02T03:04:05.000Z"


def test_encode_counts_bytes_not_characters_and_refuses_lone_surrogates() -> None:
    # under the limit in characters, over it in UTF-8 bytes (2 bytes per "é")
    with pytest.raises(ValueError, match="limit"):
        encode(build("custom.big", {"x": "é" * (MAX_ENTRY_BYTES // 2 + 10)}, source="x"))
    fields = encode(build("custom.big", {"x": "é" * (MAX_ENTRY_BYTES // 2 - 100)}, source="x"))
    assert sum(len(k.encode()) + len(v.encode()) for k, v in fields.items()) <= MAX_ENTRY_BYTES
    with pytest.raises(ValueError, match="subject is not valid Unicode"):
        encode(build("custom.odd", {"x": "ü"}, source="x", subject="bad \udc80"))


def test_encode_decode_round_trip_validates_into_the_catalogue_model() -> None:
    event = build("user.registered", USER, source="auth", org_id="o1", subject="u1")
    fields = encode(event, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert set(fields) == {"id", "type", "source", "time", "schema", "data", "org_id", "subject", "traceparent"}
    assert all(isinstance(v, str) for v in fields.values())
    back = decode(fields, stream="s", entry_id="1-0", deliveries=2)
    assert back.data == USER
    assert isinstance(back.data, UserRegistered)
    assert (back.id, back.type, back.org_id, back.subject, back.schema_version) == (event.id, event.type, "o1", "u1", 1)
    assert back.data_as(UserRegistered) is back.data


def test_build_rejects_data_that_does_not_fit_the_catalogue() -> None:
    with pytest.raises(ValidationError):
        build("user.registered", {"user_id": "u1"}, source="auth")
    with pytest.raises(ValueError, match="produced by auth"):
        build("user.registered", USER, source="webhook")
    with pytest.raises(ValueError, match="limit"):
        encode(build("custom.big", {"x": "a" * MAX_ENTRY_BYTES}, source="x"))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"data": "{not json"}, DeadReason.MALFORMED),
        ({"data": "[1]"}, DeadReason.MALFORMED),
        ({"time": "yesterday"}, DeadReason.MALFORMED),
        ({"schema": "v1"}, DeadReason.MALFORMED),
        ({"id": ""}, DeadReason.MALFORMED),
        ({"data": json.dumps({"user_id": "u1"})}, DeadReason.INVALID_DATA),
        ({"data": json.dumps({"pad": "x" * MAX_ENTRY_BYTES})}, DeadReason.OVERSIZED),
    ],
)
def test_decode_names_the_reason_of_a_bad_entry(change: dict[str, str], reason: DeadReason) -> None:
    fields = encode(build("user.registered", USER, source="auth")) | change
    with pytest.raises(MalformedEntry) as info:
        decode(fields)
    assert info.value.reason is reason


def test_unknown_types_keep_their_data_as_a_dict() -> None:
    fields = encode(build("thing.happened", {"a": 1}, source="outside"))
    assert decode(fields).data == {"a": 1}
