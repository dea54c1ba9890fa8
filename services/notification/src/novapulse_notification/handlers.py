"""Event handling: the table of event types the service reacts to, each handled by :meth:`Notifier.handle`,
and the consumer wiring the worker root calls."""

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
"""Every event type the service handles; each goes to :meth:`Notifier.handle` (which plans per type, see
:func:`~.planning.plan` and :func:`~.planning.project`)."""


def consumer_workers(rt: Runtime, notifier: Notifier, settings: NotificationSettings) -> list[Worker]:
    """One consumer group (``notification``) over the auth, webhook, report and workflow streams, with a
    handler for each of :data:`HANDLED_TYPES`."""

    async def handle(event: Event) -> None:
        await notifier.handle(event)

    consumer = rt.bus.consumer(
        handlers=dict.fromkeys(HANDLED_TYPES, handle),
        handler_timeout=settings.event_handler_timeout,
        max_deliveries=settings.event_max_deliveries,
    )
    return [consumer.run]
