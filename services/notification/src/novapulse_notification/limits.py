"""Per-recipient e-mail budgets in Redis: the :data:`~.ports.RecipientLimiter` the notifier asks before
handing a mail to a relay."""

from __future__ import annotations

from novapulse_runtime.ratelimit import RateLimit
from novapulse_runtime.runtime import Runtime

from .constants import RECIPIENT_LIMIT_NAME
from .planning import Budget
from .ports import RecipientLimiter
from .settings import NotificationSettings


async def allow_all(_recipient: str, _budget: Budget) -> bool:
    """The limiter without Redis: every mail is allowed."""
    return True


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
