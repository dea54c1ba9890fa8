"""Names shared by every process: paths, key prefixes, exit codes."""

from __future__ import annotations

API_PREFIX = "/api/v1"
HEALTH_PATH = f"{API_PREFIX}/health"
LIVE_PATH = f"{API_PREFIX}/health/live"
READY_PATH = f"{API_PREFIX}/health/ready"
METRICS_PATH = f"{API_PREFIX}/metrics"
PROBE_PATHS = frozenset({HEALTH_PATH, LIVE_PATH, READY_PATH, METRICS_PATH})

REQUEST_ID_HEADER = "X-Request-ID"
PROBLEM_CONTENT_TYPE = "application/problem+json"

RATE_LIMIT_KEY_PREFIX = "novapulse:rl:"

CONFIG_ERROR_EXIT = 2
FORCED_EXIT = 130

# Ports of the dev stack; a worker's probe/metrics port is its API port + WORKER_PORT_OFFSET.
WORKER_PORT_OFFSET = 1000
