"""Names, categories, limits and defaults of the notification service, in one place."""

from __future__ import annotations

from enum import StrEnum

SERVICE_NAME = "notification"
API_PREFIX = "/api/v1/notifications"
DEFAULT_HTTP_PORT = 8103


class Category(StrEnum):
    """What a notification is about; preferences are set per category and channel."""

    SECURITY = "security"
    ACCOUNT = "account"
    WEBHOOKS = "webhooks"
    REPORTS = "reports"
    WORKFLOWS = "workflows"


class Channel(StrEnum):
    EMAIL = "email"
    IN_APP = "in_app"


class DeliveryState(StrEnum):
    """Life of one (event, recipient, channel) delivery."""

    PENDING = "pending"  # recorded, not yet attempted
    SENDING = "sending"  # a worker holds the lease and is talking to the relay
    RETRYING = "retrying"  # transient failures on every relay; the event will be redelivered
    SENT = "sent"  # the relay accepted the message (e-mail) or the notice was stored (in-app)
    FAILED = "failed"  # permanent failure (5xx); never retried
    SUPPRESSED = "suppressed"  # not sent on purpose: preference, rate limit, disabled user


class ErrorClass(StrEnum):
    """Why a delivery failed, as ``notification.failed`` publishes it: a stable class, never the reason text
    (a relay's reply may quote the recipient's address)."""

    REJECTED = "rejected"  # the relay refused the mail permanently (5xx)
    INVALID_ADDRESS = "invalid_address"  # no relay can be given the address
    TEMPLATE_ERROR = "template_error"  # the template failed to render
    MESSAGE_ERROR = "message_error"  # the message could not be built, or the relay cannot carry it (SMTPUTF8)
    INTERNAL_ERROR = "internal_error"  # anything else that went wrong while sending


# Categories whose notifications ignore opt-outs and cannot be turned off.
CRITICAL_CATEGORIES = frozenset({Category.SECURITY})

# Collections (in the service's own database).
USERS = "users"
DELIVERIES = "deliveries"
ATTEMPTS = "delivery_attempts"
NOTIFICATIONS = "notifications"
PREFERENCES = "preferences"

# E-mail.
MESSAGE_ID_DOMAIN_FALLBACK = "novapulse.local"
MAX_SUBJECT_CHARS = 200
MAX_ATTEMPTS_LOGGED = 50
SMTP_RESPONSE_MAX_CHARS = 500

# Paging.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

# Leases on deliveries: the lease is the SMTP timeout plus this margin (seconds), renewed every third of it
# while its holder lives; every worker looks for deliveries whose holder died every SWEEP_INTERVAL seconds.
LEASE_MARGIN_SECONDS = 5.0
SWEEP_INTERVAL_SECONDS = 1.0
SWEEP_BATCH = 64
SWEEP_CONCURRENCY = 8

# Rate limits: one budget per kind of mail (see notifier.Budget).
RECIPIENT_LIMIT_NAME = "email-recipient"
ROUTE_LIMIT_PER_MINUTE = 120

# Free-form data a workflow may pass to a template.
MAX_REQUEST_DATA_KEYS = 50
MAX_REQUEST_VALUE_CHARS = 2000
