"""Pure delivery rules: event-type filters, the retry schedule, ``Retry-After``, and what an attempt leads to."""

from __future__ import annotations

import random
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from .constants import Outcome

_TYPE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
_PATTERN = re.compile(r"^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?)$")


def new_id(prefix: str) -> str:
    """A time-ordered id: ``<prefix>_<ms since epoch, hex><random>`` (sorts by creation time)."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


def valid_event_type(name: str) -> bool:
    """Lower-case dotted names such as ``user.registered``."""
    return bool(_TYPE.match(name))


def valid_filter(pattern: str) -> bool:
    """An exact type, a ``prefix.*`` wildcard, or ``*``."""
    return bool(_PATTERN.match(pattern))


def matches(filters: Sequence[str], event_type: str) -> bool:
    """Whether an endpoint with these filters receives ``event_type`` (no filters = everything)."""
    if not filters:
        return True
    for f in filters:
        if f == "*" or f == event_type:
            return True
        if f.endswith(".*") and event_type.startswith(f[:-1]):
            return True
    return False


def jittered(delay: float, jitter: float, rng: random.Random | None = None) -> float:
    """``delay`` ± ``jitter`` (a fraction), never negative."""
    if delay <= 0 or jitter <= 0:
        return max(delay, 0.0)
    r = (rng or random).uniform(-jitter, jitter)
    return max(0.0, delay * (1 + r))


_DELAY_SECONDS = re.compile(r"[0-9]+")  # RFC 9110 §10.2.3: delay-seconds = 1*DIGIT (ASCII digits only)
RETRY_AFTER_CEILING = 10.0**9  # seconds (~31 years): any bigger delay-seconds is read as this, then clamped


@dataclass(frozen=True)
class RetryAfter:
    """A receiver's ``Retry-After`` as read: ``seconds`` from now (None when absent or invalid) and, when
    the header was present but invalid, ``error`` saying why (recorded on the attempt)."""

    seconds: float | None
    error: str | None = None


def read_retry_after(value: str | None, now: datetime) -> RetryAfter:
    """Read a ``Retry-After`` header (RFC 9110 §10.2.3): ``delay-seconds`` (ASCII digits) or an
    ``HTTP-date`` (RFC 9110 §5.6.7; the three date forms of ``email.utils``). A date in the past is 0 s; a
    huge number is :data:`RETRY_AFTER_CEILING` (the caller clamps it to ``WEBHOOK_RETRY_AFTER_MAX``).
    Anything else (``-5``, ``1.5``, ``²``, garbage, a date that overflows) is invalid: ``seconds`` None and
    ``error`` says why. Never raises."""
    if value is None:
        return RetryAfter(None)
    text = value.strip()
    if not text:
        return RetryAfter(None, "empty Retry-After header")
    if _DELAY_SECONDS.fullmatch(text):
        digits = text.lstrip("0") or "0"
        return RetryAfter(float(digits) if len(digits) <= 9 else RETRY_AFTER_CEILING)
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    except Exception:  # email.utils raises TypeError, ValueError, IndexError or OverflowError on bad dates
        return RetryAfter(None, f"invalid Retry-After header {text[:64]!r} (RFC 9110 §10.2.3): schedule used")
    return RetryAfter(min(max(0.0, seconds), RETRY_AFTER_CEILING))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds asked for by a ``Retry-After`` header, or None when absent or invalid (see
    :func:`read_retry_after`)."""
    return read_retry_after(value, now).seconds


def classify(status: int | None) -> Outcome:
    """2xx succeeds; 410 disables; 429/503 are throttling; everything else (3xx too) fails."""
    if status is None:
        return Outcome.FAILURE
    if 200 <= status < 300:
        return Outcome.SUCCESS
    if status == 410:
        return Outcome.GONE
    if status in (429, 503):
        return Outcome.THROTTLED
    return Outcome.FAILURE


@dataclass(frozen=True)
class RetryPolicy:
    """Delays before each attempt: ``schedule[0]`` before the first, ``schedule[n]`` after the n-th fails."""

    schedule: tuple[float, ...]
    jitter: float = 0.2
    retry_after_max: float = 3600.0

    @property
    def max_attempts(self) -> int:
        """Attempts in one round (the schedule's length)."""
        return len(self.schedule)

    def next_delay(
        self, attempts_in_round: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds until the next attempt after ``attempts_in_round`` failed ones, or None when exhausted.
        A receiver's ``Retry-After`` replaces the schedule's delay (clamped to ``retry_after_max``)."""
        if attempts_in_round >= self.max_attempts:
            return None
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max)
        return jittered(self.schedule[attempts_in_round], self.jitter, rng)


@dataclass(frozen=True)
class Decision:
    """What to record after an attempt."""

    succeeded: bool
    next_attempt_at: datetime | None  # None: final
    disable_endpoint: str | None  # reason, when the endpoint must be disabled
    exhausted: bool  # failed for good (emit webhook.message.failed)


def decide(
    outcome: Outcome,
    attempts_in_round: int,
    policy: RetryPolicy,
    now: datetime,
    *,
    retry_after: float | None = None,
    failing_since: datetime | None = None,
    disable_after: float = float("inf"),
    rng: random.Random | None = None,
) -> Decision:
    """The consequence of one attempt: success, a retry time, or a final failure (and maybe disabling)."""
    if outcome is Outcome.SUCCESS:
        return Decision(True, None, None, False)
    if outcome is Outcome.GONE:
        return Decision(False, None, "the endpoint answered 410 Gone", True)
    disable = None
    if failing_since is not None and (now - failing_since).total_seconds() >= disable_after:
        disable = f"no successful delivery since {failing_since.isoformat()}"
    delay = policy.next_delay(attempts_in_round, retry_after if outcome is Outcome.THROTTLED else None, rng)
    if delay is None or disable:
        return Decision(False, None, disable, True)
    return Decision(False, now + timedelta(seconds=delay), None, False)


_SENSITIVE = ("auth", "token", "key", "secret", "cookie", "password", "session")


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers as logged in attempts: credentials in custom headers are masked."""
    return {k: ("***" if any(s in k.lower() for s in _SENSITIVE) else v) for k, v in headers.items()}
