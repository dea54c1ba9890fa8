"""Names and limits of the example service (units in the names or the comments)."""

from __future__ import annotations

import re

SERVICE_NAME = "example"
DEFAULT_HTTP_PORT = 8190
API_PREFIX = "/api/v1/example"

NOTE_ID = re.compile(r"nt_[0-9a-f]{32}")
"""The shape of the note ids this service hands out; any other path value is a 404 (``routes.path_id``)."""

MAX_NOTES_PER_ORG = 1000
"""Notes an organisation may keep; the next one is refused (``NoteLimitReached``)."""
MAX_TEXT_CHARS = 2000
PURGE_BATCH = 500
"""Notes deleted per round trip by the retention worker."""
