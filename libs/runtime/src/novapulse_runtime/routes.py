"""Route declarations: each route names its pydantic body, query and response models and its rate limits.

The same declarations drive request parsing, validation errors (422 with field errors), rate limiting and
the generated OpenAPI 3.1 document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

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
    rate_limits: tuple[RateLimit, ...] = ()
    summary: str = ""
    tags: tuple[str, ...] = ()
    auth: bool = False
    operator: bool = False
    """Platform-operator route (``OPERATIONS_TOKEN``), never opened by a tenant token."""
    errors: tuple[int, ...] = ()
    name: str = field(default="")


class Routes:
    """A list of routes declared with decorators::

        routes = Routes(prefix="/api/v1/auth")

        @routes.post("/register", body=RegisterIn, response=UserOut, status=201,
                     rate_limits=[RateLimit("register-ip", 10, 3600)])  # key=None: client IP
        async def register(request: web.Request, body: RegisterIn) -> UserOut: ...

    A handler receives the request plus ``body=`` and/or ``query=`` when declared, and returns a pydantic
    model (serialised with ``status``), ``None`` (204) or an aiohttp response.
    """

    def __init__(self, prefix: str = "", tags: Sequence[str] = ()) -> None:
        self.prefix = prefix.rstrip("/")
        self.tags = tuple(tags)
        self.items: list[Route] = []

    def route(self, method: str, path: str, **options: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            doc_lines = (handler.__doc__ or "").strip().splitlines()
            options.setdefault("summary", doc_lines[0] if doc_lines else "")
            options.setdefault("tags", self.tags)
            options["rate_limits"] = tuple(options.get("rate_limits", ()))
            options["tags"] = tuple(options["tags"])
            options["errors"] = tuple(options.get("errors", ()))
            full = (self.prefix + path) if path != "/" or not self.prefix else self.prefix
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


def json_response(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=model.model_dump_json(by_alias=True).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )
