"""Composition root: wires the repository, the secret box, the delivery worker and the event bus."""

from __future__ import annotations

import logging
from typing import Any

from novapulse_runtime.bus import Event, EventBus, Outbox
from novapulse_runtime.catalog import EventData
from novapulse_runtime.ratelimit import RateLimiter
from novapulse_runtime.runtime import Composition, Runtime
from novapulse_runtime.settings import fail_config

from .api import build_routes
from .repository import Repository
from .secretbox import SecretBox, SecretError
from .sender import Sender
from .service import WebhookService
from .settings import WebhookSettings
from .slots import EndpointSlots
from .ssrf import AddressPolicy
from .versions import EndpointVersions
from .worker import Delivery

log = logging.getLogger("novapulse.webhook")


class OutboxPublisher:
    """Publishes this service's events through its transactional outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def publish(self, event_type: str, data: EventData, *, org_id: str, subject: str) -> None:
        await self.outbox.add(event_type, data, org_id=org_id, subject=subject)


def secret_box(settings: WebhookSettings) -> SecretBox:
    """The encryption of endpoint secrets; a missing or bad key stops start-up with one clear line."""
    if not settings.webhook_secret_keys.strip():
        fail_config(
            "WEBHOOK_SECRET_KEYS is required: comma-separated Fernet keys that encrypt endpoint secrets "
            "(generate one: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')"
        )
    try:
        return SecretBox.from_setting(settings.webhook_secret_keys)
    except SecretError as exc:
        fail_config(f"WEBHOOK_SECRET_KEYS: {exc}")


def _data(event: Event) -> dict[str, Any]:
    data = event.data
    if isinstance(data, EventData):
        return data.model_dump(mode="json")
    return dict(data) if isinstance(data, dict) else {"value": data}


async def build(rt: Runtime) -> Composition:
    settings = rt.settings
    assert isinstance(settings, WebhookSettings)
    box = secret_box(settings)
    repo = Repository(rt.db)
    await repo.ensure_indexes()
    composition = Composition(authenticator=rt.tokens.authenticate, title="NovaPulse webhooks")
    if rt.role in ("api", "all"):
        routes = build_routes(
            WebhookService(repo, settings, box, EndpointVersions(rt.redis, settings.events_namespace))
        )
        # operations routes (streams, dead letters, replay) see every organisation's events: OPERATIONS_TOKEN only
        routes.extend(EventBus(rt).routes(routes.prefix))
        composition.routes = routes
    if rt.role in ("worker", "all"):
        bus = EventBus(rt)
        outbox = bus.outbox()
        policy = AddressPolicy(settings.webhook_allowed_cidrs, settings.webhook_allow_http)
        delivery = Delivery(
            repo,
            settings,
            box,
            Sender(policy, settings.webhook_dns_timeout),
            OutboxPublisher(outbox),
            rt.metrics,
            EndpointVersions(rt.redis, bus.keys.namespace),
            RateLimiter(rt.redis, rt.metrics, settings.service_name),  # always on: endpoints' own limits
            EndpointSlots(rt.redis, bus.keys.namespace, settings.lease_seconds),
        )
        consumer = bus.consumer()

        @consumer.on("*")
        async def fan_out(event: Event) -> None:
            await delivery.on_event(event.id, event.org_id or "", event.type, _data(event), event.time)

        composition.workers = [delivery.run, consumer.run, outbox.relay]
    return composition
