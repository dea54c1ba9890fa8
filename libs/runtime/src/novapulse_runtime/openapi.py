"""OpenAPI 3.1 generated from route declarations and their pydantic models.

What the document says is what the process does:

- every schema a parameter or body refers to is in ``components.schemas`` (query models' ``$defs`` — enums
  such as ``MessageStatus`` — are hoisted there and their ``$ref`` rewritten), so every ``$ref`` resolves;
- a query parameter's schema has no ``null`` branch: leaving the parameter out is how a client says "none";
- the success status is the route's declared ``status`` (204 with no content for routes without a response
  model: :class:`~.routes.Routes`);
- every route documents 503 (a dependency is unreachable, with ``Retry-After``), rate-limited routes 429
  (with ``Retry-After``), routes with a body or query 400/413/415/422, authenticated routes 401/403.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from .problems import DEPENDENCY_RETRY_AFTER
from .routes import Route

REF_PREFIX = "#/components/schemas/"

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["type", "title", "status"],
}


RETRY_AFTER_HEADER: dict[str, Any] = {
    "description": f"Seconds to wait before retrying (503: {DEPENDENCY_RETRY_AFTER})",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without its ``null`` alternative (and its ``default: null``)."""
    out = dict(schema)
    alts = out.get("anyOf")
    if isinstance(alts, list):
        kept = [a for a in alts if a != {"type": "null"}]
        if len(kept) != len(alts):
            del out["anyOf"]
            if len(kept) == 1:
                out.update({k: v for k, v in kept[0].items() if k not in out or k == "$ref"})
            else:
                out["anyOf"] = kept
    if out.get("default", 0) is None:
        del out["default"]
    return out


def build_openapi(title: str, version: str, routes: list[Route], description: str = "") -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for r in routes:
        if r.body is not None:
            models.append((r.body, "validation"))
        if r.response is not None:
            models.append((r.response, "serialization"))
    keys, top = models_json_schema(models, ref_template=REF_PREFIX + "{model}") if models else ({}, {})
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    schemas["Problem"] = PROBLEM_SCHEMA
    paths: dict[str, Any] = {}
    problem_ref = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for r in routes:
        path = _PARAM.sub(r"{\1}", r.path)
        op: dict[str, Any] = {"operationId": f"{r.name}_{r.method.lower()}", "responses": {}}
        if r.summary:
            op["summary"] = r.summary
        if r.tags:
            op["tags"] = list(r.tags)
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in _PARAM.findall(r.path)
        ]
        if r.query is not None:
            qschema = r.query.model_json_schema(ref_template=REF_PREFIX + "{model}")
            for def_name, def_schema in qschema.get("$defs", {}).items():
                schemas.setdefault(def_name, def_schema)
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
                param["schema"] = _without_null(prop)
                params.append(param)
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": keys[(r.body, "validation")]}},
            }
        if r.response is not None:
            op["responses"][str(r.status)] = {
                "description": HTTPStatus(r.status).phrase,
                "content": {"application/json": {"schema": keys[(r.response, "serialization")]}},
            }
        else:
            op["responses"][str(r.status)] = {"description": HTTPStatus(r.status).phrase}
        codes: set[int] = set(r.errors) | {503}
        if r.body is not None or r.query is not None:
            codes |= {400, 413, 415, 422}
        if r.rate_limits:
            codes.add(429)
        if r.auth:
            codes |= {401, 403, 503}  # 503: token revocation cannot be checked (revocation.py, fail closed)
            op["security"] = [{"bearer": []}]
        if r.operator:
            codes |= {401, 404}
            op["security"] = [{"operations": []}]
        for code in sorted(codes):
            response: dict[str, Any] = {"description": HTTPStatus(code).phrase, "content": problem_ref}
            if code in (429, 503):
                response["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
            op["responses"][str(code)] = response
        op["responses"]["default"] = {"description": "Problem", "content": problem_ref}
        paths.setdefault(path, {})[r.method.lower()] = op
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "operations": {"type": "http", "scheme": "bearer", "description": "OPERATIONS_TOKEN"},
            },
        },
    }
    return doc


Mode = Literal["validation", "serialization"]
