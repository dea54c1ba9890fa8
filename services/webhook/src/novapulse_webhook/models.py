"""Request and response bodies of the webhook API (they also drive the OpenAPI document)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic.json_schema import SkipJsonSchema

from novapulse_runtime.paging import PageQuery

from .constants import (
    EVENT_TYPE_PATTERN,
    FORBIDDEN_HEADERS,
    MAX_CUSTOM_HEADERS,
    MAX_DESCRIPTION,
    MAX_ENDPOINT_CONCURRENCY,
    MAX_ENDPOINT_RATE,
    MAX_EVENT_TYPE,
    MAX_FILTERS,
    MAX_HEADER_VALUE,
    MAX_IDEMPOTENCY_KEY,
    MAX_URL_LENGTH,
    MessageStatus,
    Outcome,
)
from .domain import valid_event_type, valid_filter
from .signing import secret_key

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")

# The validators' rules, stated in the schema too, so the OpenAPI document says what the API accepts.
FILTER_PATTERN = r"^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?)$"
SECRET_PATTERN = (
    r"^whsec_(?:(?:[A-Za-z0-9+/]{4}){8,20}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"  # noqa: S105 - a pattern
    r"|(?:[A-Za-z0-9+/]{4}){21}(?:[A-Za-z0-9+/]{2}==)?)$"
)
"""``whsec_`` + base64 of 24 to 64 bytes (what :func:`.signing.secret_key` accepts)."""
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"
_IPV6 = (
    "(?:"
    + "|".join(
        [
            rf"(?:{_H16}:){{6}}{_LS32}",
            rf"::(?:{_H16}:){{5}}{_LS32}",
            rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
            rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
            rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
            rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
        ]
    )
    + ")"
)
"""RFC 3986 §3.2.2 ``IPv6address`` (no zone identifiers: RFC 6874 zones never name a public receiver)."""
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TOP_LABEL = r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = rf"(?:{_LABEL}\.)*{_TOP_LABEL}\.?"
"""LDH labels of 1-63 (RFC 1123 §2.1), the last one starting with a letter: what :func:`.ssrf.check_host_name`
accepts, but for the 253-character bound, the A-label check of ``xn--`` labels (IDNA, not a regular language)
and ``localhost`` names (the address policy's call). No look-ahead: fuzzers generate from this pattern."""
URL_PATTERN = (
    r"^[Hh][Tt][Tt][Pp][Ss]?://"
    rf"(?:{_IPV4}|\[{_IPV6}\]|{_HOST_NAME})"
    r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
    r"(?:[/?][\x21-\x22\x24-\x7e]*)?$"
)
"""http(s), a host name, a dotted-quad IPv4 address or a bracketed IPv6 literal (RFC 3986 §3.2.2), an optional
port (1-65535), no credentials, fragment, spaces or controls: the syntax :func:`.ssrf.check_url` accepts.
Whether the host's addresses may be contacted is the address policy's call (422 otherwise)."""


def _any_case(text: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in text)  # names: letters and "-"


_REFUSED = "|".join(
    [*(_any_case(h) + "$" for h in sorted(FORBIDDEN_HEADERS)), *(_any_case(p) for p in ("webhook-", "proxy-", "sec-"))]
)
HEADER_NAME_PATTERN = rf"^(?!(?:{_REFUSED}))[A-Za-z0-9!#$%&'*+.^_`|~-]{{1,64}}$"
"""A header token (RFC 9110 §5.6.2) that is not one the sender sets itself (what ``_check_headers`` refuses,
except the same name given twice in different cases)."""
HEADER_VALUE_PATTERN = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"

Url = Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH, pattern=URL_PATTERN)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION)]
Filters = Annotated[list[Annotated[str, Field(pattern=FILTER_PATTERN)]], Field(max_length=MAX_FILTERS)]
Headers = Annotated[
    dict[str, str],
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_CUSTOM_HEADERS,
            "propertyNames": {"pattern": HEADER_NAME_PATTERN},
            "additionalProperties": {"type": "string", "maxLength": MAX_HEADER_VALUE, "pattern": HEADER_VALUE_PATTERN},
        }
    ),
]
Concurrency = Annotated[int, Field(ge=1, le=MAX_ENDPOINT_CONCURRENCY)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")  # URL_PATTERN needs look-ahead


def _check_filters(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    for f in value:
        if not valid_filter(f):
            raise ValueError(f"{f!r} is not an event type, a 'prefix.*' wildcard or '*'")
    return sorted(set(value))


def _check_headers(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if len(value) > MAX_CUSTOM_HEADERS:
        raise ValueError(f"at most {MAX_CUSTOM_HEADERS} custom headers")
    seen: set[str] = set()
    for name, val in value.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        lower = name.lower()
        if lower in FORBIDDEN_HEADERS or lower.startswith(("webhook-", "proxy-", "sec-")):
            raise ValueError(f"the header {name!r} cannot be set on an endpoint")
        if lower in seen:
            raise ValueError(f"the header {name!r} is given twice")
        seen.add(lower)
        if len(val) > MAX_HEADER_VALUE or any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in val):
            raise ValueError(f"the value of {name!r} is too long or has control characters")
    return value


class EndpointIn(_In):
    """A new endpoint."""

    url: Url
    description: Description = ""
    event_types: Filters = Field(default_factory=list)
    enabled: bool = True
    headers: Headers = Field(default_factory=dict)
    rate_limit: int | None = Field(default=None, ge=1, le=MAX_ENDPOINT_RATE, description="messages per second")
    concurrency: Concurrency | None = None
    secret: str | None = Field(
        default=None, pattern=SECRET_PATTERN, description="whsec_ secret to use; generated when omitted"
    )

    _filters = field_validator("event_types")(_check_filters)
    _headers = field_validator("headers")(_check_headers)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None:
            secret_key(value)
        return value


class EndpointPatch(_In):
    """Fields to change; omitted fields stay as they are."""

    # null is refused for these (422 from the service), so the schema does not offer it
    url: Url | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None
    event_types: Filters | SkipJsonSchema[None] = None
    enabled: bool | SkipJsonSchema[None] = None
    headers: Headers | SkipJsonSchema[None] = None
    rate_limit: int | None = Field(default=None, ge=1, le=MAX_ENDPOINT_RATE, description="null: no limit")
    concurrency: Concurrency | SkipJsonSchema[None] = None

    _filters = field_validator("event_types")(_check_filters)
    _headers = field_validator("headers")(_check_headers)


class EndpointOut(BaseModel):
    """An endpoint (its secret is only shown by ``GET /endpoints/{id}/secret``)."""

    id: str
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    headers: dict[str, str]
    rate_limit: int | None
    concurrency: int
    disabled_reason: str | None = None
    failing_since: datetime | None = None
    created_at: datetime
    updated_at: datetime


class EndpointList(BaseModel):
    items: list[EndpointOut]
    next_cursor: str | None = None


class SecretPrevious(BaseModel):
    secret: str
    expires_at: datetime


class SecretOut(BaseModel):
    """The secret that signs now, and older secrets still signing during a rotation's grace period."""

    secret: str
    previous: list[SecretPrevious] = Field(default_factory=list)


class RotateIn(_In):
    """Rotate the signing secret; the old one keeps signing for ``grace_seconds``."""

    secret: str | None = Field(
        default=None, pattern=SECRET_PATTERN, description="the new secret; generated when omitted"
    )
    grace_seconds: float | None = Field(default=None, ge=0, le=30 * 86400)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None:
            secret_key(value)
        return value


class EventIn(_In):
    """An application event to deliver to the organisation's subscribed endpoints."""

    type: str = Field(min_length=1, max_length=MAX_EVENT_TYPE, pattern=EVENT_TYPE_PATTERN)
    data: dict[str, Any]
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=MAX_IDEMPOTENCY_KEY)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if not valid_event_type(value):
            raise ValueError("an event type is lower-case dotted words, e.g. invoice.paid")
        return value


class EventAccepted(BaseModel):
    event_id: str
    messages: int
    duplicate: bool = False


class MessageOut(BaseModel):
    """One event for one endpoint, with its delivery state. ``id`` is the ``webhook-id`` header."""

    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: MessageStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None = None
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime
    payload: dict[str, Any] | None = None


class MessageList(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None = None


class MessageQuery(PageQuery):
    """Query of ``GET /messages``: a page (``limit``, ``cursor``) and exact filters; ``since``/``until``
    bound the creation time (inclusive)."""

    endpoint_id: str | None = Field(default=None, max_length=64)
    status: MessageStatus | None = None
    event_type: str | None = Field(default=None, max_length=MAX_EVENT_TYPE)
    http_status: int | None = Field(
        default=None, ge=100, le=599, description="the HTTP status of the message's last attempt"
    )
    since: datetime | None = None
    until: datetime | None = None


class AttemptOut(BaseModel):
    """One HTTP attempt as it happened."""

    id: str
    message_id: str
    endpoint_id: str
    attempt: int
    started_at: datetime
    url: str
    request_headers: dict[str, str]
    status: int | None
    response_body: str | None
    duration_ms: float | None
    error: str | None
    outcome: Outcome


class AttemptList(BaseModel):
    items: list[AttemptOut]


class RecoverIn(_In):
    """Resend every failed message of the endpoint created since ``since``; ``dry_run`` only counts them."""

    since: datetime
    until: datetime | None = None
    dry_run: bool = Field(default=False, description="count the failed messages, resend nothing")


class RecoverOut(BaseModel):
    messages: int = Field(description="messages requeued (with dry_run: that would be)")
    dry_run: bool = False


class EventTypeOut(BaseModel):
    """An event type an endpoint can subscribe to (``event_types`` filter)."""

    name: str
    source: str = Field(description="the producing service")
    description: str


class EventTypeList(BaseModel):
    """The public types of the platform catalogue, by name. Applications' own types (``POST /events``) are
    free-form and not listed."""

    items: list[EventTypeOut]


class ResendOut(BaseModel):
    id: str
    status: MessageStatus


class TestOut(BaseModel):
    message_id: str
