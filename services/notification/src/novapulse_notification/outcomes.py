"""The events a delivery's end publishes (``notification.delivered``, ``notification.failed``; models in
``novapulse_runtime.catalog.notification``): pure, from the delivery document as the settling write left it.

Only ids leave the service: the recipient's user id (empty for a non-user), never the address, a name, the
message or the relay's reply text. The event id is derived from the delivery and its outcome
(:func:`outcome_event_id`), so a write that is redone publishes the same id and consumers drop the copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from novapulse_runtime.bus import derived_event_id
from novapulse_runtime.catalog.notification import NotificationDelivered, NotificationFailed
from novapulse_runtime.clock import to_ms
from novapulse_runtime.documents import Doc

from .constants import DeliveryState, ErrorClass

DELIVERED = "notification.delivered"
FAILED = "notification.failed"


@dataclass(frozen=True)
class Outcome:
    """One outcome event to add to the outbox: its ``type``, ``data``, derived ``event_id`` and ``subject``
    (the delivery id: events of one delivery keep their order)."""

    type: str
    data: NotificationDelivered | NotificationFailed
    event_id: str
    subject: str


def outcome_event_id(delivery_id: str, created_ms: int, event_type: str) -> str:
    """The id of the outcome event of one delivery: UUIDv7-shaped with the delivery's creation time (epoch ms)
    in its time field, the rest from SHA-256 of (``notification``, delivery id, event type)."""
    return derived_event_id(created_ms, "notification", delivery_id, event_type)


def _moment(value: object, fallback_ms: int) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(fallback_ms / 1000, UTC)


def outcome_of(
    doc: Doc, state: DeliveryState, error_class: ErrorClass | None = None, smtp_code: int | None = None
) -> Outcome | None:
    """The event the end of this delivery publishes, or ``None``: a delivery that is not ``sent`` or
    ``failed`` (suppressed on purpose, released for a retry), or outside any organisation (the e-mail
    verification of a registration), publishes nothing. ``doc`` is the delivery after its settling write
    (:meth:`~.repository.Repository.finish`)."""
    org_id = str(doc.get("org_id") or "")
    if not org_id or state not in (DeliveryState.SENT, DeliveryState.FAILED):
        return None
    key = str(doc["_id"])
    ended_ms = int(doc.get("updated_ms") or 0)
    created = _moment(doc.get("created_at"), ended_ms)
    common: dict[str, object] = {
        "org_id": org_id,
        "delivery_id": key,
        "channel": str(doc["channel"]),
        "template": str(doc.get("template", "")),
        "category": str(doc.get("category", "")),
        "user_id": str(doc.get("user_id") or ""),
        "cause_event_id": str(doc.get("event_id", "")),
        "cause_event_type": str(doc.get("event_type", "")),
        "attempts": int(doc.get("attempt_count") or 0),
        "created_at": created,
    }
    ended = datetime.fromtimestamp(ended_ms / 1000, UTC) if ended_ms else created
    data: NotificationDelivered | NotificationFailed
    if state is DeliveryState.SENT:
        type_, data = DELIVERED, NotificationDelivered.model_validate({**common, "delivered_at": ended})
    else:
        type_ = FAILED
        cls = (error_class or ErrorClass.INTERNAL_ERROR).value
        data = NotificationFailed.model_validate(
            {**common, "error_class": cls, "smtp_code": smtp_code, "failed_at": ended}
        )
    return Outcome(type_, data, outcome_event_id(key, to_ms(created), type_), key)
