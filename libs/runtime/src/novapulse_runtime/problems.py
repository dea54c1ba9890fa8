"""RFC 9457 problem details: the only error shape any NovaPulse process returns."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web

from .constants import PROBLEM_CONTENT_TYPE

DEPENDENCY_RETRY_AFTER = 5
"""Seconds in the ``Retry-After`` of a 503 answered because MongoDB or Redis is unreachable: the MongoDB
client's server selection gives up after 3 s, so a retry after 5 s meets a fresh attempt, and readiness
(checked every few seconds by an orchestrator) has had time to take the instance out of rotation."""


class ProblemError(Exception):
    """Raise from a handler to answer with a problem+json body (a 503 always carries ``Retry-After``)."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title or HTTPStatus(status).phrase)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.type = type_
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {"type": type_, "title": title or HTTPStatus(status).phrase, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra)
    if status == 503 and not any(k.lower() == "retry-after" for k in headers or {}):
        headers = {**(headers or {}), "Retry-After": str(DEPENDENCY_RETRY_AFTER)}
    try:  # strict JSON out (no NaN/Infinity): extras that cannot be written are dropped, never the problem
        text = json.dumps(body, default=str, allow_nan=False)
    except ValueError:
        text = json.dumps({k: body[k] for k in ("type", "title", "status", "detail", "instance") if k in body})
    return web.Response(
        status=status,
        body=text.encode(),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def from_error(err: ProblemError, instance: str | None = None) -> web.Response:
    return problem_response(
        err.status,
        err.detail,
        title=err.title,
        type_=err.type,
        instance=instance,
        headers=err.headers,
        **err.extra,
    )
