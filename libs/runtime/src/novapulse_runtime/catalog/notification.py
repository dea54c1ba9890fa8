"""Command events the notification service consumes from other services (``novapulse:events:workflow``)."""

from __future__ import annotations

from typing import Any, Literal

from . import EventData, register


class NotificationRequested(EventData):
    """Private command: send a templated notification to one user or to every user of an org role."""

    org_id: str
    template: str
    user_id: str | None = None
    role: Literal["owner", "admin", "member"] | None = None
    data: dict[str, Any] = {}


register("notification.requested", NotificationRequested, source="workflow", public=False)
