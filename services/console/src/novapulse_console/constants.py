"""Names and limits of the console."""

from __future__ import annotations

SERVICES = ("auth", "webhook", "notification", "workflow", "report")
"""Services the console knows, by name; each one's API lives at ``<SERVICE>_API_URL`` + its prefix."""
API_PREFIX = {
    "auth": "/api/v1/auth",
    "webhook": "/api/v1/webhooks",
    "notification": "/api/v1/notifications",
    "workflow": "/api/v1/workflows",
    "report": "/api/v1/reports",
}
COOKIE_NAME = "np_console"
SECURE_COOKIE_NAME = "__Host-np_console"
"""With ``CONSOLE_COOKIE_SECURE`` the cookie takes the ``__Host-`` prefix (RFC 6265bis §4.1.3.2): Secure,
Path=/, no Domain — no sibling host can set or shadow it."""
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
MAX_FORM_BYTES = 256 * 1024
"""Largest form body the console reads (bytes)."""
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
