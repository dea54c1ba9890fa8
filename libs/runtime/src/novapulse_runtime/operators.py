"""Platform-operator access for operations routes (event streams, dead letters, replay).

These routes see every organisation's data, so tenant tokens never open them, whatever their role. They
take ``Authorization: Bearer <OPERATIONS_TOKEN>``, compared in constant time. With ``OPERATIONS_TOKEN``
unset the routes answer 404, as if they did not exist.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .problems import ProblemError


def require_operator(request: web.Request, expected: str) -> None:
    """Raise unless the request carries ``expected`` (the ``OPERATIONS_TOKEN``) as its bearer token."""
    if not expected:
        raise ProblemError(404, f"No route for {request.path}")
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if (
        scheme.lower() != "bearer"
        or not presented.isascii()
        or not hmac.compare_digest(presented.encode(), expected.encode())
    ):
        raise ProblemError(
            401,
            "Operations routes need the operations token",
            headers={"WWW-Authenticate": 'Bearer realm="operations"'},
        )
