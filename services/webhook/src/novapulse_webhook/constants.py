"""Names, limits and defaults of the webhook service, in one place."""

from __future__ import annotations

import enum
import re

API_PREFIX = "/api/v1/webhooks"
SERVICE_NAME = "webhook"
DEFAULT_HTTP_PORT = 8102

# Collections of the service's own database.
ENDPOINTS = "endpoints"
MESSAGES = "messages"
ATTEMPTS = "attempts"
EVENTS = "events"

# Identifier prefixes (ids are time-ordered, so they are the sort keys of list pages).
ENDPOINT_ID_PREFIX = "ep"
MESSAGE_ID_PREFIX = "msg"
EVENT_ID_PREFIX = "evt"
ENDPOINT_ID_PATTERN = re.compile(r"ep_[A-Za-z0-9_-]{1,61}")
"""What an endpoint id in a path may look like (at most 64 characters); anything else is a 404 unseen."""
MESSAGE_ID_PATTERN = re.compile(r"msg_[A-Za-z0-9_-]{1,60}")
"""What a message id in a path may look like (at most 64 characters); anything else is a 404 unseen."""

# Secrets: "whsec_" + base64 of 24..64 random bytes (Standard Webhooks).
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64

# Standard Webhooks headers.
HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
SIGNATURE_VERSION = "v1"
USER_AGENT = "NovaPulse-Webhooks/1.0"

# Headers a customer may not set on an endpoint: hop-by-hop, framing, routing and our own signature headers.
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "expect",
        "user-agent",
        HEADER_ID,
        HEADER_TIMESTAMP,
        HEADER_SIGNATURE,
        "traceparent",
        "tracestate",
    }
)
MAX_CUSTOM_HEADERS = 20
MAX_HEADER_VALUE = 1024
MAX_URL_LENGTH = 2048
MAX_FILTERS = 100
MAX_DESCRIPTION = 512
MAX_EVENT_TYPE = 128
EVENT_TYPE_PATTERN = r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$"
"""An event type name: dot-separated segments of lower-case letters, digits, ``_`` and ``-``."""
MAX_IDEMPOTENCY_KEY = 256
MAX_ENDPOINT_CONCURRENCY = 64
MAX_ENDPOINT_RATE = 10_000

# Delivery defaults (overridable by settings).
DEFAULT_RETRY_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
DEFAULT_TIMEOUT = 15.0
DEFAULT_DISABLE_AFTER = 5 * 24 * 3600.0
DEFAULT_ROTATION_GRACE = 24 * 3600.0
DEFAULT_MAX_PAYLOAD = 256 * 1024
STORED_RESPONSE_BYTES = 4096
READ_RESPONSE_BYTES = 64 * 1024
LANE_QUEUE_LIMIT = 1000
WRITE_BATCH_SIZE = 500
WRITE_BATCH_DELAY = 0.005  # seconds the group-commit writer gathers message inserts (fan-out awaits them)
WRITE_BACKGROUND_DELAY = 0.02  # seconds it gathers the writes nobody awaits (attempt logs, message updates)
ENDPOINT_CACHE_TTL = 2.0  # seconds a cached endpoint lives when its version cannot be read (Redis down)
ENDPOINT_RATE_LIMIT = "webhook-endpoint-rate"  # rate-limit name of an endpoint's messages/s (bucket: endpoint id)

# Event types this service emits (catalogue: novapulse_runtime.catalog.webhook).
EVENT_TEST = "webhook.test"
EVENT_ENDPOINT_DISABLED = "webhook.endpoint.disabled"
EVENT_MESSAGE_FAILED = "webhook.message.failed"
SELF_EVENTS = frozenset({EVENT_ENDPOINT_DISABLED, EVENT_MESSAGE_FAILED})


class MessageStatus(enum.StrEnum):
    """Life of a message (one event for one endpoint)."""

    PENDING = "pending"  # waiting for its next attempt (next_attempt_at)
    SENDING = "sending"  # claimed by a worker until next_attempt_at (the lease)
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Outcome(enum.StrEnum):
    """What one attempt came to."""

    SUCCESS = "success"
    FAILURE = "failure"
    GONE = "gone"  # 410: the receiver asked us to stop
    THROTTLED = "throttled"  # 429/503 with or without Retry-After
    REFUSED = "refused"  # SSRF guard refused the address
    LOST = "lost"  # the worker died during the attempt; outcome unknown
