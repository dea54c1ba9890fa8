"""The worker's event consumer: every event type the service reacts to, handled by :class:`Notifier`."""

from __future__ import annotations

from novapulse_runtime.bus import Event
from novapulse_runtime.runtime import Runtime, Worker

from .notifier import Notifier
from .settings import NotificationSettings

HANDLED_TYPES = (
    "user.registered",
    "user.invited",
    "invite.delivery_requested",
    "invite.accepted",
    "user.role_changed",
    "user.disabled",
    "user.password_changed",
    "mfa.enabled",
    "mfa.disabled",
    "mfa.recovery_code_used",
    "mfa.challenge_failed",
    "user.registration_attempted",
    "user.login_blocked",
    "registration.verification_requested",
    "webhook.endpoint.disabled",
    "webhook.message.failed",
    "report.completed",
    "notification.requested",
)


def consumer_workers(rt: Runtime, notifier: Notifier, settings: NotificationSettings) -> list[Worker]:
    """One consumer group (``notification``) over the auth, webhook, report and workflow streams."""
    bus = rt.bus
    consumer = bus.consumer(
        handler_timeout=settings.event_handler_timeout, max_deliveries=settings.event_max_deliveries
    )

    async def handle(event: Event) -> None:
        await notifier.handle(event)

    for name in HANDLED_TYPES:
        consumer.add_handler(name, handle)
    return [consumer.run]
