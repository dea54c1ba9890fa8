"""Composition root: wires the repository, the secret box, the delivery worker and the event bus, one
function per role (``api``, ``worker``), and declares the service (:data:`SPEC`)."""

from __future__ import annotations

from novapulse_runtime.process import ServiceSpec
from novapulse_runtime.ratelimit import RateLimiter
from novapulse_runtime.routes import Routes
from novapulse_runtime.runtime import Runtime, Worker
from novapulse_runtime.secretbox import SecretBox, SecretBoxError
from novapulse_runtime.settings import fail_config

from .api import build_routes
from .handlers import handlers
from .publisher import OutboxPublisher
from .repository import Repository
from .sender import Sender
from .service import WebhookService
from .settings import WebhookSettings
from .slots import EndpointSlots
from .ssrf import AddressPolicy
from .versions import EndpointVersions
from .worker import DeliveryWorker


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
    except SecretBoxError as exc:
        fail_config(f"WEBHOOK_SECRET_KEYS: {exc}")


def _settings(rt: Runtime) -> WebhookSettings:
    settings = rt.settings
    assert isinstance(settings, WebhookSettings)
    return settings


async def api(rt: Runtime) -> Routes:
    """Composition root of the ``api`` role: the webhook service and its routes."""
    settings = _settings(rt)
    repo = await rt.repository(Repository)
    return build_routes(
        WebhookService(repo, settings, secret_box(settings), EndpointVersions(rt.redis, rt.bus.keys.namespace))
    )


async def worker(rt: Runtime) -> list[Worker]:
    """Composition root of the ``worker`` role: delivery, the fan-out consumer and the outbox relay."""
    settings = _settings(rt)
    repo = await rt.repository(Repository)
    bus = rt.bus
    outbox = bus.outbox()
    delivery = DeliveryWorker(
        repo,
        settings,
        secret_box(settings),
        Sender(
            AddressPolicy(settings.webhook_allowed_cidrs, settings.webhook_allow_http), settings.webhook_dns_timeout
        ),
        OutboxPublisher(outbox),
        rt.metrics,
        EndpointVersions(rt.redis, bus.keys.namespace),
        RateLimiter(rt.redis, rt.metrics, settings.service_name),  # always on: endpoints' own limits
        EndpointSlots(rt.redis, bus.keys.namespace, settings.lease_seconds),
    )
    consumer = bus.consumer(handlers=handlers(delivery))
    return [delivery.run, consumer.run, outbox.relay]


SPEC = ServiceSpec(
    name="webhook",
    settings_cls=WebhookSettings,
    api=api,
    worker=worker,
    title="NovaPulse webhooks",
    package="novapulse_webhook",
)
