"""Composition root, wiring only: the repository (shared by both roles), the routes (``api``) and the event
consumer with its notifier, the lease take-over loop and the outbox relay (``worker``); :data:`SPEC` names them."""

from __future__ import annotations

from novapulse_runtime.process import ServiceSpec, periodic
from novapulse_runtime.routes import Routes
from novapulse_runtime.runtime import Runtime, Worker

from .api import build_routes
from .catcher import local_catcher
from .constants import SWEEP_INTERVAL_SECONDS
from .delivery_log import DeliveryLog
from .handlers import consumer_workers
from .inbox import Inbox
from .limits import recipient_limiter
from .mailer import Mailer, relays
from .notifier import Links, Notifier
from .observer import MetricsObserver
from .preferences import Preferences
from .rendering import Renderer
from .repository import Repository
from .settings import NotificationSettings


async def api(rt: Runtime) -> Routes:
    """Composition root of the ``api`` role: the in-app notification, preference and delivery log routes."""
    repo = await rt.repository(Repository)
    return build_routes(Inbox(repo), Preferences(repo), DeliveryLog(repo))


async def worker(rt: Runtime) -> list[Worker]:
    """Composition root of the ``worker`` role: the event consumer, its notifier, the lease take-over and the
    outbox relay (the delivery outcome events)."""
    settings = rt.settings
    assert isinstance(settings, NotificationSettings)
    repo = await rt.repository(Repository)
    outbox = rt.bus.outbox()
    catcher_port = None
    if not settings.smtp_host:
        catcher = await rt.open(local_catcher(settings))
        catcher_port = catcher.port
    primary, fallback = relays(settings, catcher_port)
    mailer = Mailer(
        primary,
        fallback,
        attempts=settings.smtp_retry_attempts,
        base_delay=settings.smtp_retry_base_delay,
        breaker_threshold=settings.smtp_breaker_threshold,
        breaker_cooldown=settings.smtp_breaker_cooldown,
    )
    notifier = Notifier(
        repo,
        Renderer(settings.templates_dir),
        mailer,
        sender=settings.smtp_from,
        links=Links(settings.links_base(), settings.invite_accept_path, settings.verify_email_path),
        lease_seconds=settings.lease_seconds(),
        limiter=recipient_limiter(rt, settings),
        observer=MetricsObserver(rt),
        outbox=outbox,
    )
    take_over = periodic("delivery-take-over", SWEEP_INTERVAL_SECONDS, notifier.take_over_once)
    return [*consumer_workers(rt, notifier, settings), take_over, outbox.relay]


SPEC = ServiceSpec(
    name="notification",
    settings_cls=NotificationSettings,
    api=api,
    worker=worker,
    title="NovaPulse notification",
    package="novapulse_notification",
)
