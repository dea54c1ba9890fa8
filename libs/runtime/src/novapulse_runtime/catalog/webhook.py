"""Events produced by the webhook service (stream ``<namespace>:events:webhook``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .registry import EventData, EventType


class WebhookTest(EventData):
    """A test message an admin sent to one endpoint."""

    endpoint_id: str
    message: str = "This is a test event from NovaPulse"


class EndpointDisabled(EventData):
    """An endpoint was disabled: it answered 410, or failed without success for too long."""

    endpoint_id: str
    org_id: str
    url: str
    reason: str
    failing_since: datetime | None = None


class MessageFailed(EventData):
    """A message exhausted its retries without a successful delivery."""

    message_id: str
    endpoint_id: str
    org_id: str
    event_type: str
    attempts: int
    last_error: str


class ApplicationEvent(EventData):
    """Free-form event posted by an application through the webhook API (type chosen by the caller)."""

    payload: dict[str, Any]


SOURCE = "webhook"
EVENTS = (
    EventType("webhook.test", WebhookTest, source=SOURCE, public=True),
    EventType("webhook.endpoint.disabled", EndpointDisabled, source=SOURCE, public=True),
    EventType("webhook.message.failed", MessageFailed, source=SOURCE, public=True),
)
"""The types this service produces (registered in :data:`~novapulse_runtime.catalog.CATALOG`)."""
