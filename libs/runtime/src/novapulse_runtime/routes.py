"""Route declarations: each route names its pydantic body, query and response models and its rate limits.

The same declarations drive request parsing, validation errors (422 with field errors), rate limiting and
the generated OpenAPI 3.1 document.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from .errors import ErrorTable
from .problems import ProblemError
from .ratelimit import RateLimit

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    """The success status; :meth:`Routes.route` defaults it to 200 with a response model, 204 without."""
    rate_limits: tuple[RateLimit, ...] = ()
    summary: str = ""
    tags: tuple[str, ...] = ()
    auth: bool = False
    operator: bool = False
    """Platform-operator route (``OPERATIONS_TOKEN``), never opened by a tenant token."""
    errors: tuple[int, ...] = ()
    name: str = field(default="")
    problems: ErrorTable | None = None
    """The service's map from domain errors to problems (:mod:`.errors`), set by :class:`Routes`."""


class Routes:
    """A list of routes declared with decorators::

        routes = Routes(prefix="/api/v1/auth")

        @routes.post("/register", body=RegisterIn, response=UserOut, status=201,
                     rate_limits=[RateLimit("register-ip", 10, 3600)])  # key=None: client IP
        async def register(request: web.Request, body: RegisterIn) -> UserOut: ...

    A handler receives the request plus ``body=`` and/or ``query=`` when declared, and returns a pydantic
    model (serialised with ``status``), ``None`` (answered ``status``, empty) or an aiohttp response.
    ``status`` defaults to 200 when the route declares a ``response`` model and to 204 when it does not, so
    the OpenAPI document states the code the route really answers. A
    :class:`~novapulse_runtime.errors.DomainError` raised by a handler is answered as ``problems`` (the
    service's table) or the runtime's defaults say (:func:`~novapulse_runtime.errors.to_problem`).
    """

    def __init__(self, prefix: str = "", tags: Sequence[str] = (), problems: ErrorTable | None = None) -> None:
        self.prefix = prefix.rstrip("/")
        self.tags = tuple(tags)
        self.problems = problems
        self.items: list[Route] = []

    def route(self, method: str, path: str, **options: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            doc_lines = (handler.__doc__ or "").strip().splitlines()
            options.setdefault("summary", doc_lines[0] if doc_lines else "")
            options.setdefault("tags", self.tags)
            options["rate_limits"] = tuple(options.get("rate_limits", ()))
            options["tags"] = tuple(options["tags"])
            options["errors"] = tuple(options.get("errors", ()))
            options.setdefault("status", 200 if options.get("response") is not None else 204)
            if options["status"] == 204 and options.get("response") is not None:
                raise ValueError(f"{handler.__name__}: a 204 route has no response body")
            full = (self.prefix + path) if path != "/" or not self.prefix else self.prefix
            options.setdefault("problems", self.problems)
            self.items.append(Route(method.upper(), full, handler, name=handler.__name__, **options))
            return handler

        return register

    def get(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **options)

    def put(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **options)

    def patch(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **options)

    def extend(self, other: Routes) -> None:
        self.items.extend(other.items)


def path_id(request: web.Request, name: str, pattern: re.Pattern[str]) -> str:
    """The path parameter ``name`` when it has the shape of the ids this service hands out (``pattern``,
    matched in full); any other value names nothing that can exist, so it is a 404 (``No such <thing>``),
    never a query with caller-chosen text.

    :raises ProblemError: 404 when the value does not match.
    """
    value = request.match_info.get(name, "")
    if not pattern.fullmatch(value):
        raise ProblemError(404, f"No such {name.removesuffix('_id').replace('_', ' ')}")
    return value


_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


class RouteTable:
    """Which methods each declared path template answers, for ``OPTIONS`` and the ``Allow`` header of 405.

    A concrete path belongs to its most specific template: a literal segment beats a ``{param}`` one, so
    ``/invites/accept`` is ``POST /invites/accept`` only, even though ``/invites/{invite_id}`` (``DELETE``)
    matches it too (RFC 9110 §9.3.7 and §10.2.1: ``Allow`` lists the methods *the target resource*
    supports). A method the resource does not declare is a 405 there, never a call of another template.
    """

    def __init__(self, routes: Sequence[Route]) -> None:
        self._methods: dict[str, set[str]] = {}
        for r in routes:
            self._methods.setdefault(r.path, set()).add(r.method)
        self._patterns = sorted(
            ((self.specificity(p), re.compile(self._regex(p)), p) for p in self._methods),
            key=lambda item: item[0],
        )

    @staticmethod
    def specificity(path: str) -> tuple[int, ...]:
        """Sort key: literal segments (0) before parameters (1), left to right."""
        return tuple(1 if _PARAM.search(seg) else 0 for seg in path.strip("/").split("/"))

    @staticmethod
    def _regex(path: str) -> str:
        out, pos = "^", 0
        for m in _PARAM.finditer(path):
            out += re.escape(path[pos : m.start()]) + "[^/]+"
            pos = m.end()
        return out + re.escape(path[pos:]) + "$"

    def template(self, path: str) -> str | None:
        """The declared template ``path`` belongs to, or ``None``."""
        for _, pattern, template in self._patterns:
            if pattern.match(path):
                return template
        return None

    def allowed(self, path: str) -> list[str]:
        """Methods of the resource at ``path`` (plus ``OPTIONS``), sorted; empty when nothing is declared."""
        template = self.template(path)
        if template is None:
            return []
        return sorted(self._methods[template] | {"OPTIONS"})

    def check(self, method: str, path: str) -> web.Response | None:
        """``OPTIONS`` → 204 with ``Allow``; a method the resource lacks → raises 405 with ``Allow``;
        ``None`` when the request may go on to its handler (or the path is not a declared one)."""
        allowed = self.allowed(path)
        if not allowed:
            return None
        if method == "OPTIONS":
            return web.Response(status=204, headers={"Allow": ", ".join(allowed)})
        if method not in allowed:
            raise web.HTTPMethodNotAllowed(method, [m for m in allowed if m != "OPTIONS"])
        return None


def json_response(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=model.model_dump_json(by_alias=True).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )
