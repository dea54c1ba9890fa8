"""Events of the workflow service (stream ``<namespace>:events:workflow``): commands the notification service
consumes."""

from __future__ import annotations

from typing import Any, Literal

from .registry import EventData, EventType


class NotificationRequested(EventData):
    """Private command: send a templated notification to one user or to every user of an org role."""

    org_id: str
    template: str
    user_id: str | None = None
    role: Literal["owner", "admin", "member"] | None = None
    data: dict[str, Any] = {}


EVENTS = (EventType("notification.requested", NotificationRequested, source="workflow", public=False),)
"""The types this service produces (registered in :data:`~novapulse_runtime.catalog.CATALOG`)."""
