"""Request ids: every request has one, every log line of it carries it, every response echoes it."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..constants import REQUEST_ID_HEADER
from ..logs import request_id_var

MAX_REQUEST_ID = 128
"""Characters; a longer incoming id is replaced, never truncated."""

REQUEST_ID_KEY = web.RequestKey("request_id", str)


def request_id(request: web.Request) -> str:
    """The request's id: the incoming ``X-Request-ID`` when it is 1 to :data:`MAX_REQUEST_ID` printable ASCII
    characters (so a gateway's id follows the request through every service), otherwise a new UUID4 hex."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    if 0 < len(incoming) <= MAX_REQUEST_ID and incoming.isprintable() and incoming.isascii():
        return incoming
    return uuid.uuid4().hex


@web.middleware
async def request_id_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Set the request id for the request's log lines (``request_id_var``) and on its response."""
    rid = request_id(request)
    request[REQUEST_ID_KEY] = rid
    token = request_id_var.set(rid)
    try:
        response = await handler(request)
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = rid
        return response
    finally:
        request_id_var.reset(token)
