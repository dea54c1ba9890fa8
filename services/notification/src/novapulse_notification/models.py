"""HTTP request and response models of the API, and the mappers from stored documents to them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from novapulse_runtime.clock import as_datetime
from novapulse_runtime.documents import Doc
from novapulse_runtime.paging import PageQuery

from .constants import CRITICAL_CATEGORIES, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Category, Channel, DeliveryState
from .preferences import Matrix


class NotificationOut(BaseModel):
    id: str
    category: Category
    event_type: str
    title: str
    body: str
    link: str | None = None
    created_at: datetime
    read_at: datetime | None = None


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    unread_count: int
    next_cursor: str | None = None


class _ListQuery(PageQuery):
    """The runtime's paging query with this service's page sizes (1 to ``MAX_PAGE_SIZE``, default
    ``DEFAULT_PAGE_SIZE``); unknown parameters are ignored, as they always were here."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Items per page")


class NotificationQuery(_ListQuery):
    unread: bool = False


class ReadAllOut(BaseModel):
    updated: int


class ChannelSwitches(BaseModel):
    email: bool
    in_app: bool


class ChannelSwitchesIn(BaseModel):
    """``null`` or left out: keep the current setting."""

    email: bool | None = None
    in_app: bool | None = None


_CRITICAL_SWITCHES: dict[str, Any] = {
    "type": "object",
    "description": "a critical category: its channels cannot be switched off",
    "properties": {channel.value: {"enum": [True, None]} for channel in Channel},
}


class PreferencesIn(BaseModel):
    """Switches per category; categories and channels left out keep their current setting."""

    categories: dict[Category, ChannelSwitchesIn] = Field(
        json_schema_extra={"properties": {c.value: _CRITICAL_SWITCHES for c in sorted(CRITICAL_CATEGORIES)}}
    )

    def requested(self) -> dict[str, dict[str, bool]]:
        """category → channel → on, for the switches the request sets."""
        return {c.value: s.model_dump(exclude_none=True) for c, s in self.categories.items()}


class PreferencesOut(BaseModel):
    categories: dict[Category, ChannelSwitches]
    critical: list[Category]


class AttemptOut(BaseModel):
    at: datetime
    relay: str
    outcome: Literal["sent", "transient", "permanent"]
    code: int | None = None
    response: str = ""


class DeliveryOut(BaseModel):
    id: str
    event_id: str
    event_type: str
    template: str
    category: Category
    channel: Channel
    recipient: str
    user_id: str | None = None
    email: str | None = None
    state: DeliveryState
    reason: str | None = None
    critical: bool = False
    attempts: list[AttemptOut]
    created_at: datetime
    sent_at: datetime | None = None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None = None


class DeliveryQuery(_ListQuery):
    state: DeliveryState | None = None
    channel: Channel | None = None
    category: Category | None = None
    event_type: str | None = Field(default=None, max_length=128)
    event_id: str | None = Field(default=None, max_length=128)
    user_id: str | None = Field(default=None, max_length=128)
    email: str | None = Field(default=None, max_length=320)


def notification_out(doc: Doc) -> NotificationOut:
    """A stored notice as the API shows it."""
    return NotificationOut(
        id=doc["_id"],
        category=doc["category"],
        event_type=doc.get("event_type", ""),
        title=doc.get("title", ""),
        body=doc.get("body", ""),
        link=doc.get("link"),
        created_at=doc["created_at"],
        read_at=as_datetime(doc.get("read_ms")),
    )


def delivery_out(doc: Doc, attempts: list[Doc]) -> DeliveryOut:
    """A stored delivery and its logged attempts as the API shows them."""
    return DeliveryOut(
        id=doc["_id"],
        event_id=doc["event_id"],
        event_type=doc.get("event_type", ""),
        template=doc.get("template", ""),
        category=doc["category"],
        channel=doc["channel"],
        recipient=doc["recipient"],
        user_id=doc.get("user_id"),
        email=doc.get("email"),
        state=doc["state"],
        reason=doc.get("reason"),
        critical=bool(doc.get("critical")),
        attempts=[
            AttemptOut(at=a["at"], relay=a["relay"], outcome=a["outcome"], code=a.get("code"), response=a["response"])
            for a in attempts
        ],
        created_at=doc["created_at"],
        sent_at=as_datetime(doc.get("sent_ms")),
    )


def preferences_out(matrix: Matrix) -> PreferencesOut:
    """Effective preferences (category → channel → on) as the API shows them."""
    return PreferencesOut(
        categories={Category(c): ChannelSwitches(**v) for c, v in matrix.items()},
        critical=sorted(CRITICAL_CATEGORIES),
    )
