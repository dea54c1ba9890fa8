"""Request and response bodies of the webhook API (they also drive the OpenAPI document)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .constants import (
    DEFAULT_PAGE,
    FORBIDDEN_HEADERS,
    MAX_CUSTOM_HEADERS,
    MAX_DESCRIPTION,
    MAX_ENDPOINT_CONCURRENCY,
    MAX_ENDPOINT_RATE,
    MAX_EVENT_TYPE,
    MAX_FILTERS,
    MAX_HEADER_VALUE,
    MAX_IDEMPOTENCY_KEY,
    MAX_PAGE,
    MAX_URL_LENGTH,
    MessageStatus,
    Outcome,
)
from .domain import valid_event_type, valid_filter
from .secretbox import secret_key

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


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

    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    description: str = Field(default="", max_length=MAX_DESCRIPTION)
    event_types: list[str] = Field(default_factory=list, max_length=MAX_FILTERS)
    enabled: bool = True
    headers: dict[str, str] = Field(default_factory=dict)
    rate_limit: int | None = Field(default=None, ge=1, le=MAX_ENDPOINT_RATE, description="messages per second")
    concurrency: int | None = Field(default=None, ge=1, le=MAX_ENDPOINT_CONCURRENCY)
    secret: str | None = Field(default=None, description="whsec_ secret to use; generated when omitted")

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

    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL_LENGTH)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    event_types: list[str] | None = Field(default=None, max_length=MAX_FILTERS)
    enabled: bool | None = None
    headers: dict[str, str] | None = None
    rate_limit: int | None = Field(default=None, ge=1, le=MAX_ENDPOINT_RATE)
    concurrency: int | None = Field(default=None, ge=1, le=MAX_ENDPOINT_CONCURRENCY)

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


class PageQuery(_In):
    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(default=None, max_length=64)


class SecretPrevious(BaseModel):
    secret: str
    expires_at: datetime


class SecretOut(BaseModel):
    """The secret that signs now, and older secrets still signing during a rotation's grace period."""

    secret: str
    previous: list[SecretPrevious] = Field(default_factory=list)


class RotateIn(_In):
    """Rotate the signing secret; the old one keeps signing for ``grace_seconds``."""

    secret: str | None = Field(default=None, description="the new secret; generated when omitted")
    grace_seconds: float | None = Field(default=None, ge=0, le=30 * 86400)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None:
            secret_key(value)
        return value


class EventIn(_In):
    """An application event to deliver to the organisation's subscribed endpoints."""

    type: str = Field(min_length=1, max_length=MAX_EVENT_TYPE)
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
    endpoint_id: str | None = Field(default=None, max_length=64)
    status: MessageStatus | None = None
    event_type: str | None = Field(default=None, max_length=MAX_EVENT_TYPE)
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
    """Resend every failed message of the endpoint created since ``since``."""

    since: datetime
    until: datetime | None = None


class RecoverOut(BaseModel):
    messages: int


class ResendOut(BaseModel):
    id: str
    status: MessageStatus


class TestOut(BaseModel):
    message_id: str
