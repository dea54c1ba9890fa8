"""Events produced by the webhook service (stream ``novapulse:events:webhook``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import EventData, register


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
register("webhook.test", WebhookTest, source=SOURCE, public=True)
register("webhook.endpoint.disabled", EndpointDisabled, source=SOURCE, public=True)
register("webhook.message.failed", MessageFailed, source=SOURCE, public=True)
