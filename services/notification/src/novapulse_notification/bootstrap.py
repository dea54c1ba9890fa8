"""Composition root: repositories, templates, mailer, the event consumer (worker) and the routes (api)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from novapulse_runtime.net import free_port, port_open
from novapulse_runtime.ratelimit import RateLimit
from novapulse_runtime.routes import Routes
from novapulse_runtime.runtime import Runtime, Worker

from .api import build_routes
from .catcher import MailCatcher
from .constants import RECIPIENT_LIMIT_NAME
from .events import consumer_workers
from .mailer import Mailer, Relay
from .notifier import Links, Notifier, RecipientLimiter, allow_all
from .planning import Budget
from .rendering import Renderer
from .repository import Repository
from .settings import NotificationSettings

log = logging.getLogger(__name__)


def relays(settings: NotificationSettings, catcher_port: int | None = None) -> tuple[Relay, Relay | None]:
    """The primary relay (the local catcher when ``SMTP_HOST`` is empty) and the optional fallback."""
    if catcher_port is not None:
        primary = Relay("catcher", "127.0.0.1", catcher_port, "none", timeout=settings.smtp_timeout)
    else:
        primary = Relay(
            "primary",
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_tls,
            settings.smtp_username,
            settings.smtp_password.get_secret_value(),
            settings.smtp_timeout,
        )
    fallback = None
    if settings.smtp_fallback_host:
        fallback = Relay(
            "fallback",
            settings.smtp_fallback_host,
            settings.smtp_fallback_port,
            settings.smtp_fallback_tls,
            settings.smtp_username,
            settings.smtp_password.get_secret_value(),
            settings.smtp_timeout,
        )
    return primary, fallback


def recipient_limiter(rt: Runtime, settings: NotificationSettings) -> RecipientLimiter:
    """Per-recipient e-mail budgets, one per kind of mail (see :class:`~.planning.Budget`), each over
    ``RECIPIENT_EMAIL_WINDOW`` seconds: GCRA in Redis, shared by every worker, failing open like every
    NovaPulse rate limit. Invitations also draw from their inviting organisation's budget (checked first, so
    an organisation over its budget does not use up the address's)."""
    limiter = rt.limiter
    if limiter is None:
        return allow_all
    window = settings.recipient_email_window
    limits = {
        "general": RateLimit(RECIPIENT_LIMIT_NAME, settings.recipient_email_limit, window),
        "invitation": RateLimit(f"{RECIPIENT_LIMIT_NAME}-invitation", settings.invitation_recipient_limit, window),
        "security": RateLimit(f"{RECIPIENT_LIMIT_NAME}-security", settings.security_email_limit, window),
        "verification": RateLimit(f"{RECIPIENT_LIMIT_NAME}-verification", settings.verification_email_limit, window),
    }
    per_org = RateLimit(f"{RECIPIENT_LIMIT_NAME}-invitation-org", settings.invitation_org_limit, window)

    async def allowed(recipient: str, budget: Budget) -> bool:
        kind, _, topic = budget.name.partition(":")
        limit = limits.get(kind, limits["general"])
        org_over = kind == "invitation" and budget.org_id and not (await limiter.hit(per_org, budget.org_id)).allowed
        if org_over:
            return False
        key = f"{topic}:{recipient.lower()}" if topic else recipient.lower()
        return (await limiter.hit(limit, key)).allowed

    return allowed


class MetricsObserver:
    """Prometheus counters of deliveries (by channel and outcome) and SMTP attempts (by relay and outcome)."""

    def __init__(self, rt: Runtime) -> None:
        self.deliveries = rt.metrics.counter(
            "novapulse_notification_deliveries_total",
            "Deliveries handled, by channel and resulting state (duplicate: already settled)",
            ("channel", "outcome"),
        )
        self.attempts = rt.metrics.counter(
            "novapulse_notification_smtp_attempts_total", "SMTP attempts by relay and outcome", ("relay", "outcome")
        )

    def delivery(self, channel: str, outcome: str) -> None:
        self.deliveries.labels(channel, outcome).inc()

    def attempt(self, relay: str, outcome: str) -> None:
        self.attempts.labels(relay, outcome).inc()


@contextlib.asynccontextmanager
async def local_catcher(settings: NotificationSettings) -> AsyncIterator[MailCatcher]:
    """The local mail catcher (used when ``SMTP_HOST`` is empty), stopped with the process."""
    port = settings.mail_catcher_port
    if port == 0 or port_open(port):
        port = free_port()
    catcher = MailCatcher(settings.mail_catcher_dir, port).start()
    log.warning(
        "SMTP_HOST is not set: mail goes to the local mail catcher",
        extra={"smtp": f"127.0.0.1:{catcher.port}", "directory": str(catcher.directory)},
    )
    try:
        yield catcher
    finally:
        await catcher.stop()


async def _repository(rt: Runtime) -> Repository:
    async def make() -> Repository:
        repo = Repository(rt.db)
        await repo.ensure_indexes()
        return repo

    return await rt.shared("repository", make)


async def api(rt: Runtime) -> Routes:
    """Composition root of the ``api`` role: the in-app notification and preference routes."""
    return build_routes(await _repository(rt))


async def worker(rt: Runtime) -> list[Worker]:
    """Composition root of the ``worker`` role: the event consumer, its notifier and the lease take-over."""
    settings = rt.settings
    assert isinstance(settings, NotificationSettings)
    repo = await _repository(rt)
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
    )
    return [*consumer_workers(rt, notifier, settings), notifier.take_over]
