"""Names and limits of the workflow service (units in the names or the comments)."""

from __future__ import annotations

import re

SERVICE_NAME = "workflow"
DEFAULT_HTTP_PORT = 8104
API_PREFIX = "/api/v1/workflows"

DEFINITION_ID = re.compile(r"wd_[0-9a-f]{32}")
"""The shape of definition ids; any other path value is a 404 (``routes.path_id``)."""
RUN_ID = re.compile(r"wr_[0-9a-f]{32}")
"""The shape of run ids."""
STEP_KEY = r"^[a-z][a-z0-9_-]{0,47}$"
"""A step key: lower-case letter, then letters, digits, ``_`` or ``-`` (48 characters at most)."""
APP_EVENT_TYPE = r"^[a-z][a-z0-9_-]{0,39}(\.[a-z][a-z0-9_-]{0,39}){1,4}$"
"""An organisation's own event type name (``invoice.paid``): 2 to 5 dotted lower-case segments."""
APP_TRIGGER_TYPE = r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$"
"""An application event type posted to ``POST /events`` and named as a trigger: the webhook service's
``EVENT_TYPE_PATTERN`` (lower-case dotted words), at most ``MAX_APP_EVENT_TYPE`` characters, and neither a
catalogue type nor under a platform domain (the first segment of a catalogue type: ``user``, ``report``…)."""
MAX_APP_EVENT_TYPE = 100
"""Characters of an application event type."""
APP_EVENT_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""An event id a caller gives to ``POST /events`` (128 characters at most)."""
MAX_APP_EVENT_BYTES = 64_000
"""Size of a posted application event's ``data`` as JSON, in bytes (the expression data bound); larger is a
413."""
MAX_IDEMPOTENCY_KEY = 256
"""Characters of an ``Idempotency-Key`` header."""
MAX_RUNS_PER_EVENT = 100
"""Run ids listed in the answer to ``POST /events`` (an event starts one run per definition it triggers)."""

MAX_DEFINITIONS_PER_ORG = 100
"""Definitions an organisation may keep; the next create is refused (``DefinitionLimitReached``)."""
MAX_STEPS = 50
"""Steps in one definition."""
MAX_DEFINITION_BYTES = 64_000
"""Size of a definition as compact JSON, in bytes."""
MAX_EXPRESSION_CHARS = 512
"""Length of one JMESPath expression, in characters."""
MAX_EXPRESSION_INPUT_BYTES = 64_000
"""Size of the data an expression is evaluated over (trigger event + step outputs), as JSON, in bytes; a
larger context fails the step instead of being searched."""
MAX_STEP_OUTPUT_BYTES = 16_000
"""Size of one step's journaled output (and one rendered input), as JSON, in bytes."""
MAX_RUN_TRANSITIONS = 500
"""Step attempts in one run (bounds loops made with ``condition`` steps); past it the run fails."""
MAX_RUN_SECONDS = 30 * 86_400
"""Longest delay, wait or timeout a step may ask for, in seconds (30 days)."""
MAX_RETRY_ATTEMPTS = 10
"""Attempts of one step at most (the first one included)."""
MAX_RECEIVED_PER_RUN = 200
"""Events kept for one run's waits; later ones are dropped (the oldest kept)."""

END = "end"
"""The step key that ends a run (``next``/``catch``/branches may name it)."""
PURGE_BATCH = 200
"""Finished runs deleted per round trip by the retention pass."""
ORG_CAP_RETRY_MS = 250
"""Milliseconds the claim skips an organisation whose every slot of the global cap was held (its claimed
run is given back, due again then)."""
CONCURRENCY_RETRY_MS = 250
"""Milliseconds before a run that found every concurrency slot of its key taken looks again."""
REPORT_TIMEOUT_SECONDS = 3600
"""Seconds a ``report`` step waits for the report service's answer when it gives no ``timeout_seconds``."""
MAX_REPORT_RANGE_SECONDS = 366 * 86_400
"""Longest ``last_seconds`` of a ``report`` step (the report service applies its own range limit too)."""
REPORT_REPLIES = ("report.completed", "report.failed")
RUN_COMMANDS = ("notification.requested", "report.requested")
"""Commands a run's steps send to other services."""
RUN_CAUSED_OUTCOMES = ("notification.delivered", "notification.failed")
"""Events that name the command that caused them (``data.cause_event_type``): when it is one of
:data:`RUN_COMMANDS`, they trigger no run (no loops)."""
"""The report service's answers a ``report`` step waits for (correlated by ``data.request_id``)."""
REPORT_WAIT = "report"
"""The ``waiting_for`` of a run waiting for a report's answer."""
