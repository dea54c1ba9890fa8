"""Names, id shapes and limits of the report service (units in the names or the comments)."""

from __future__ import annotations

import re

SERVICE_NAME = "report"
DEFAULT_HTTP_PORT = 8105
API_PREFIX = "/api/v1/reports"
CONSUMER_GROUP = "report"

REPORT_ID = re.compile(r"rp_[0-9a-f]{32}")
"""The shape of report ids; any other path value is a 404 (``routes.path_id``)."""

XLSX_MAX_ROWS_PER_SHEET = 1_048_576
"""Rows of one Excel worksheet (the header included); the next row starts a new sheet."""
PDF_TABLE_ROWS = 200
"""Rows the PDF's table shows (the summary counts every row; the full data is in the other formats)."""
PDF_CHART_GROUPS = 12
"""Bars of the PDF's chart; smaller groups are summed under "other"."""
DOWNLOAD_PIECE_BYTES = 256 * 1024
"""Bytes read from the file store per write to the HTTP response."""
PURGE_BATCH = 100
"""Expired reports handled per round trip by the retention job."""
REFUSAL_KEEP_MS = 7 * 86_400_000
"""How long a refused ``report.requested`` is remembered (ms), so a redelivery is not answered twice: far
beyond the bus's redeliveries (delivery cap times backoff) and a replay from the dead-letter stream."""
RETRY_AFTER_SECONDS = 2
"""``Retry-After`` of a 202: when a client should poll the report again."""
WINDOW_ROWS = 100_000
"""Rows one query window of a report is expected to hold (its time span is the report's span scaled by this
over the estimated total). Each window is one query the server answers sorted; fewer, larger windows cost
the MongoDB-wire development server less (it scans per query: 0.7x the speed of one cursor with 20k-row
windows, 0.9-1.4x with 100k at 300k rows), while a whole 500k-row report in one query outlasts the client's
10 s socket timeout there."""
