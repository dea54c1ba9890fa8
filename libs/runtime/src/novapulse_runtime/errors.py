"""Domain errors: what a service layer raises when a request cannot be done, in the domain's words.

Service and use-case modules know no HTTP: they raise subclasses of these (``EmailTaken(Conflict)``,
``EndpointNotFound(NotFound)``). Only the HTTP edge turns them into RFC 9457 problems: each service gives
its :class:`~novapulse_runtime.routes.Routes` one table (``errors=``) from its own error classes to
:class:`Problem`; a class not in the table falls back to the first of its bases in :data:`DEFAULT_PROBLEMS`
(a ``Conflict`` is a 409 unless the service says otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .problems import ProblemError


def field_error(field: str, message: str, type_: str, location: str = "body") -> dict[str, str]:
    """One entry of a problem's ``errors`` list, the shape every 422 uses (request parsing too): where
    (``body``, ``query``), which ``field`` (dotted path), a ``message`` for humans and a machine ``type``."""
    return {"location": location, "field": field, "message": message, "type": type_}


class DomainError(Exception):
    """Base of every domain error.

    :param detail: a sentence safe to show the caller (no secrets, no internal ids of other organisations).
    :param extra: fields added to the problem body as they are (JSON-serialisable), e.g. ``errors=[...]``.
    """

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or type(self).__name__)
        self.detail = detail
        self.extra = extra


class Invalid(DomainError):
    """The request is well-formed but breaks a rule of the domain (HTTP 422 by default)."""


class Rejected(DomainError):
    """The request names a secret or token that does not check out (HTTP 400 by default)."""


class Unauthenticated(DomainError):
    """The caller could not be identified (HTTP 401 by default)."""


class Forbidden(DomainError):
    """The caller may not do this (HTTP 403 by default)."""


class NotFound(DomainError):
    """The thing does not exist, or not in the caller's organisation (HTTP 404 by default)."""


class Conflict(DomainError):
    """The request conflicts with the current state (HTTP 409 by default)."""


class Gone(DomainError):
    """The thing existed and has expired or been used (HTTP 410 by default)."""


class LimitReached(DomainError):
    """A limit of the domain is reached (HTTP 429 by default).

    :param retry_after: seconds after which the same request may succeed, or ``None`` when unknown; sent as
        ``Retry-After`` (RFC 9110 §10.2.3).
    """

    def __init__(self, detail: str = "", *, retry_after: int | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A dependency the request needs is unavailable for now (HTTP 503 by default, with ``Retry-After``)."""

    def __init__(self, detail: str = "", *, retry_after: int | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Problem:
    """How one domain error class is answered: HTTP status, problem ``title`` (default: the status phrase)
    and problem ``type`` URI (RFC 9457 §3.1)."""

    status: int
    title: str | None = None
    type: str = "about:blank"


ErrorTable = Mapping[type[DomainError], Problem]
"""A service's map from its domain error classes to problems."""

DEFAULT_PROBLEMS: ErrorTable = {
    Invalid: Problem(422),
    Rejected: Problem(400),
    Unauthenticated: Problem(401),
    Forbidden: Problem(403),
    NotFound: Problem(404),
    Conflict: Problem(409),
    Gone: Problem(410),
    LimitReached: Problem(429),
    Unavailable: Problem(503),
    DomainError: Problem(400),
}


def to_problem(error: DomainError, table: ErrorTable | None = None) -> ProblemError:
    """The :class:`ProblemError` answering ``error``: the entry of its most specific class in ``table``,
    then in :data:`DEFAULT_PROBLEMS` (walking the class's MRO). ``retry_after`` becomes ``Retry-After``;
    a 401 carries ``WWW-Authenticate: Bearer`` (RFC 9110 §15.5.2 requires a challenge on every 401; the
    scheme is the one NovaPulse APIs take, RFC 6750 §3, without an ``error`` attribute: the failure is of the
    credentials in the request, such as a password, not necessarily of a token)."""
    problem = DEFAULT_PROBLEMS[DomainError]
    for cls in type(error).__mro__:
        found = (table or {}).get(cls) or DEFAULT_PROBLEMS.get(cls)
        if found is not None:
            problem = found
            break
    headers: dict[str, str] = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(0, int(retry_after)))
    if problem.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return ProblemError(
        problem.status, error.detail or None, title=problem.title, type_=problem.type, headers=headers, **error.extra
    )
