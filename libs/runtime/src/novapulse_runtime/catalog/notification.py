"""Events produced by the notification service (stream ``<namespace>:events:notification``): the end of each
delivery of a notification to one recipient on one channel.

They carry ids only — never the recipient's e-mail address, a name, the subject or the body, nor the relay's
reply text (which may quote the address): ``user_id`` is empty for a recipient who is not a user yet (an
invitation, an e-mail verification). Each ``delivery_id`` ends once, so it gets one of these events; the
event id is derived from the delivery and its outcome, so a redone write publishes the same id again and
consumers drop the copy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from .registry import EventData, EventType


class DeliveryEnded(EventData):
    """Fields common to every delivery outcome."""

    org_id: str
    """The organisation the notification belongs to. Deliveries outside any organisation (the e-mail
    verification of a registration) publish no event."""
    delivery_id: str
    """The delivery's id in the notification service (40 hex digits; the delivery log's ``id``)."""
    channel: Literal["email", "in_app"]
    template: str
    """The notification's kind: the template name (``welcome``, ``invitation``, ``security_notice``, …)."""
    category: str
    """Preference category: ``security``, ``account``, ``webhooks``, ``reports`` or ``workflows``."""
    user_id: str = ""
    """The recipient's user id; empty for a recipient who is not a user (yet)."""
    cause_event_id: str
    """The id of the event that asked for the notification."""
    cause_event_type: str
    """The type of that event (``user.registered``, ``notification.requested``, …)."""
    attempts: int = 0
    """SMTP attempts made (every relay and retry counted; 1 for an in-app notice stored, 0 when nothing was
    tried, e.g. an unusable address)."""
    created_at: datetime
    """When the delivery was recorded (RFC 3339)."""


class NotificationDelivered(DeliveryEnded):
    """A notification reached its recipient: the relay accepted the e-mail (any 2xx after DATA), or the in-app
    notice was stored."""

    delivered_at: datetime
    """When the relay accepted it / the notice was stored (RFC 3339)."""


class NotificationFailed(DeliveryEnded):
    """A notification could not be delivered and will not be tried again."""

    error_class: str
    """Why, as a stable class: ``rejected`` (the relay refused the mail permanently, 5xx), ``invalid_address``
    (no relay can be given the address), ``template_error`` (the template failed to render),
    ``message_error`` (the message could not be built, or the relay cannot carry it), ``internal_error``.
    Consumers must accept classes added later."""
    smtp_code: int | None = None
    """The relay's last reply code for ``rejected`` (e.g. 550), else ``None``."""
    failed_at: datetime
    """When the delivery was marked failed (RFC 3339)."""


SOURCE = "notification"
EVENTS = (
    EventType("notification.delivered", NotificationDelivered, source=SOURCE, public=True),
    EventType("notification.failed", NotificationFailed, source=SOURCE, public=True),
)
"""The types this service produces (registered in :data:`~novapulse_runtime.catalog.CATALOG`)."""
