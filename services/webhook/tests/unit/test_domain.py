"""Pure delivery rules."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from novapulse_webhook.constants import Outcome
from novapulse_webhook.domain import (
    RetryPolicy,
    classify,
    decide,
    jittered,
    matches,
    parse_retry_after,
    valid_event_type,
    valid_filter,
)

pytestmark = pytest.mark.unit
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_filters() -> None:
    assert matches([], "user.registered")
    assert matches(["*"], "anything.here")
    assert matches(["user.*"], "user.registered")
    assert matches(["user.*"], "user.mfa.enabled")
    assert not matches(["user.*"], "users.x")
    assert not matches(["user.*"], "user")
    assert matches(["invoice.paid", "user.*"], "invoice.paid")
    assert not matches(["invoice.paid"], "invoice.paid.late")
    for good in ("*", "user.*", "invoice.paid", "a_b-c.d"):
        assert valid_filter(good)
    for bad in ("", "User.x", "a.*.b", "*.x", "a..b", "a b", "a.**"):
        assert not valid_filter(bad)
    assert valid_event_type("invoice.paid")
    assert not valid_event_type("invoice.*")


def test_classification() -> None:
    assert classify(200) is Outcome.SUCCESS
    assert classify(204) is Outcome.SUCCESS
    assert classify(301) is Outcome.FAILURE
    assert classify(304) is Outcome.FAILURE
    assert classify(410) is Outcome.GONE
    assert classify(429) is Outcome.THROTTLED
    assert classify(503) is Outcome.THROTTLED
    assert classify(500) is Outcome.FAILURE
    assert classify(None) is Outcome.FAILURE


def test_schedule_with_jitter_and_exhaustion() -> None:
    policy = RetryPolicy((0, 5, 300), jitter=0.2)
    rng = random.Random(1)
    for _ in range(200):
        d = policy.next_delay(1, rng=rng)
        assert d is not None
        assert 4.0 <= d <= 6.0
        d2 = policy.next_delay(2, rng=rng)
        assert d2 is not None
        assert 240 <= d2 <= 360
    assert policy.next_delay(3) is None
    assert jittered(0, 0.2) == 0


def test_retry_after_is_parsed_and_clamped() -> None:
    assert parse_retry_after("7", NOW) == 7
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", NOW) == 30
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None
    policy = RetryPolicy((0, 1, 1), retry_after_max=60)
    assert policy.next_delay(1, retry_after=3600) == 60
    assert policy.next_delay(1, retry_after=2) == 2


def test_decisions() -> None:
    policy = RetryPolicy((0, 10), jitter=0)
    ok = decide(Outcome.SUCCESS, 1, policy, NOW)
    assert ok.succeeded
    assert ok.next_attempt_at is None
    gone = decide(Outcome.GONE, 1, policy, NOW)
    assert gone.disable_endpoint
    assert gone.exhausted
    retry = decide(Outcome.FAILURE, 1, policy, NOW)
    assert retry.next_attempt_at == NOW + timedelta(seconds=10)
    assert not retry.exhausted
    throttled = decide(Outcome.THROTTLED, 1, policy, NOW, retry_after=3)
    assert throttled.next_attempt_at == NOW + timedelta(seconds=3)
    last = decide(Outcome.FAILURE, 2, policy, NOW)
    assert last.exhausted
    assert last.next_attempt_at is None
    assert last.disable_endpoint is None
    stale = decide(Outcome.FAILURE, 1, policy, NOW, failing_since=NOW - timedelta(days=6), disable_after=5 * 86400)
    assert stale.exhausted
    assert stale.disable_endpoint


def test_own_announcements_only_reach_endpoints_that_name_them() -> None:
    from novapulse_webhook.fanout import subscribed

    eps = [
        {"_id": "all", "enabled": True, "event_types": []},
        {"_id": "star", "enabled": True, "event_types": ["*"]},
        {"_id": "ops", "enabled": True, "event_types": ["webhook.*"]},
        {"_id": "exact", "enabled": True, "event_types": ["webhook.message.failed"]},
        {"_id": "off", "enabled": False, "event_types": ["webhook.*"]},
    ]
    assert [e["_id"] for e in subscribed(eps, "webhook.message.failed")] == ["ops", "exact"]
    assert [e["_id"] for e in subscribed(eps, "user.invited")] == ["all", "star"]
    assert [e["_id"] for e in subscribed(eps, "webhook.test")] == ["all", "star", "ops"]


def test_worker_caches_are_bounded() -> None:
    import time as _time

    from novapulse_webhook.endpoints import CACHE_MAX_ENTRIES, make_room

    now = _time.monotonic()
    cache = {f"old{i}": (now - 1, None) for i in range(CACHE_MAX_ENTRIES - 1)}
    cache["live"] = (now + 60, None)
    make_room(cache)
    assert list(cache) == ["live"]  # full: the expired entries went, the live one stayed
    full = {f"live{i}": (now + 60, None) for i in range(CACHE_MAX_ENTRIES)}
    make_room(full)
    assert full == {}
    small = {"a": (now - 1, None)}
    make_room(small)
    assert small == {"a": (now - 1, None)}  # below the bound nothing is scanned


@pytest.mark.parametrize(
    ("header", "seconds", "valid"),
    [
        ("7", 7.0, True),  # delay-seconds
        ("007", 7.0, True),
        ("0", 0.0, True),
        ("9" * 5000, 1e9, True),  # huge: read as the ceiling (int() would refuse 5000 digits), clamped later
        ("Thu, 01 Jan 2026 00:00:30 GMT", 30.0, True),  # IMF-fixdate
        ("Thursday, 01-Jan-26 00:00:30 GMT", 30.0, True),  # obsolete RFC 850 form
        ("Thu Jan  1 00:00:30 2026", 30.0, True),  # obsolete asctime form
        ("Wed, 31 Dec 2025 23:00:00 GMT", 0.0, True),  # in the past: now
        ("Fri, 31 Dec 9999 23:59:59 GMT", 1e9, True),  # far future: the ceiling
        ("²", None, False),  # isdigit() but not float(): the case
        ("٣", None, False),  # Arabic-Indic digit: not an ASCII DIGIT
        ("-5", None, False),  # negative
        ("1.5", None, False),  # not an integer
        ("1e3", None, False),
        ("soon", None, False),  # garbage
        ("Mon, 32 Foo 2026 99:99:99 GMT", None, False),
        ("Sun, 06 Nov 1994 08:49:37 +9999", None, False),  # offset out of range
        ("", None, False),
        (None, None, True),  # absent
    ],
)
def test_retry_after_every_form_of_rfc_9110_and_every_fault(
    header: str | None, seconds: float | None, valid: bool
) -> None:
    from novapulse_webhook.domain import read_retry_after

    read = read_retry_after(header, NOW)
    assert read.seconds == seconds
    assert (read.error is None) is valid
    assert parse_retry_after(header, NOW) == seconds
