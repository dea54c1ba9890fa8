"""OpenAPI 3.1 generated from route declarations and their pydantic models."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from .routes import Route

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


def build_openapi(title: str, version: str, routes: list[Route], description: str = "") -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for r in routes:
        if r.body is not None:
            models.append((r.body, "validation"))
        if r.response is not None:
            models.append((r.response, "serialization"))
    keys, top = models_json_schema(models, ref_template="#/components/schemas/{model}") if models else ({}, {})
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
            qschema = r.query.model_json_schema()
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": keys[(r.body, "validation")]}},
            }
        if r.response is not None:
            op["responses"][str(r.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": keys[(r.response, "serialization")]}},
            }
        else:
            op["responses"][str(r.status)] = {"description": "OK"}
        codes: set[int] = set(r.errors)
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
            op["responses"][str(code)] = {"description": "Problem", "content": problem_ref}
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
