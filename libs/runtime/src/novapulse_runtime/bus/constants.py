"""Names and defaults of the event bus: stream and key prefixes, envelope fields, limits."""

from __future__ import annotations

DEFAULT_NAMESPACE = "novapulse"
"""Prefix of every stream and key in production; a process takes its own from the ``EVENTS_NAMESPACE``
setting (:attr:`~novapulse_runtime.settings.ServiceSettings.events_namespace`; tests use one per test)."""

EVENTS_SEGMENT = "events"  # <ns>:events:<source>       one stream per producing service
DEAD_SEGMENT = "dead"  # <ns>:dead:<group>                dead letters of one consumer group
REPLAY_SEGMENT = "replay"  # <ns>:replay:<group>          replayed dead letters, read by that group only
IDEMPOTENCY_SEGMENT = "seen"  # <ns>:seen:{<group>}:<event id>   (hash tag: one cluster slot per group)
OUTBOX_LOCK_SEGMENT = "outbox-lock"  # <ns>:outbox-lock:<service>
OUTBOX_WAKE_SEGMENT = "outbox-wake"  # pub/sub channel <ns>:outbox-wake:<service>

OUTBOX_COLLECTION = "outbox"
OUTBOX_DEAD_COLLECTION = "outbox_dead"  # records the relay cannot publish, with the reason

# Envelope fields (flat stream fields, all strings).
F_ID = "id"
F_TYPE = "type"
F_SOURCE = "source"
F_TIME = "time"
F_ORG = "org_id"
F_SUBJECT = "subject"
F_DATA = "data"
F_SCHEMA = "schema"
F_TRACEPARENT = "traceparent"
F_TRACESTATE = "tracestate"
REQUIRED_FIELDS = (F_ID, F_TYPE, F_SOURCE, F_TIME, F_DATA, F_SCHEMA)
ENVELOPE_FIELDS = (*REQUIRED_FIELDS, F_ORG, F_SUBJECT, F_TRACEPARENT, F_TRACESTATE)

# Extra fields of a dead-letter entry (the original fields are kept beside them).
DEAD_PREFIX = "dead_"
D_REASON = "dead_reason"
D_ERROR = "dead_error"
D_STREAM = "dead_stream"
D_ENTRY = "dead_entry_id"
D_GROUP = "dead_group"
D_DELIVERIES = "dead_deliveries"
D_TIME = "dead_time"
D_TRUNCATED = "dead_truncated"

MAX_ENTRY_BYTES = 256 * 1024
"""Largest entry (sum of field names and values, UTF-8) a consumer accepts; larger ones are dead letters."""
MAX_ERROR_CHARS = 2000
MAX_DEAD_FIELD_CHARS = 8192

# Consumer defaults.
DEFAULT_HANDLER_TIMEOUT = 30.0
DEFAULT_CLAIM_IDLE = 15.0
"""Seconds an entry read but not acknowledged may go unrenewed before another consumer reclaims it
(``XPENDING … IDLE`` + ``XCLAIM``). Its holder renews it every third of that while it lives, however long the
handler runs, so this is how long a dead (``kill -9``) or wedged consumer's entries wait, not a bound on handlers."""
RENEW_FRACTION = 3
"""A consumer renews the entries it holds every ``claim_idle / RENEW_FRACTION`` seconds."""
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_BACKOFF_BASE = 0.5
DEFAULT_BACKOFF_MAX = 30.0
DEFAULT_BLOCK_MS = 1000
DEFAULT_IDEMPOTENCY_TTL = 7 * 24 * 3600.0
FORGET_CONSUMER_AFTER = 3600.0  # seconds idle with nothing pending before a consumer is removed from a group

# Publisher / relay defaults.
DEFAULT_STREAM_MAXLEN = 100_000
DEFAULT_DEAD_MAXLEN = 100_000
TRIM_INTERVAL = 2.0
RELAY_BATCH = 500
RELAY_SWEEP_INTERVAL = 1.0
RELAY_LOCK_TTL = 5.0
RELAY_RETRY_MAX = 2.0
"""Seconds, the longest pause of the outbox relay between failed passes (0.2 s doubling up to it): short, so a
relay resumes within about this long after a Redis fail-over ends."""

MESSAGING_SYSTEM = "redis"
