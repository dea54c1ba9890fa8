"""RFC 9457 problem details: the only error shape any NovaPulse process returns."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web

from .constants import PROBLEM_CONTENT_TYPE


class ProblemError(Exception):
    """Raise from a handler to answer with a problem+json body."""

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
    return web.Response(
        status=status,
        body=json.dumps(body, default=str).encode(),
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
