"""Request bodies and query strings parsed strictly, so what a route accepts is what its OpenAPI schema says.

Rules (one per kind of loose input, each applied to every declared route):

- **JSON** is RFC 8259 and nothing looser (:mod:`.jsonstrict`): ``NaN``, ``Infinity``, numbers beyond the
  double range (``1e999``, which would become ``inf`` inside a ``dict[str, Any]``), lone surrogates, bad UTF-8
  and deep nesting are a **400**.
- **Scalars are strict**, read as JSON Schema reads them (pydantic strict mode over JSON input): an
  ``integer`` takes no ``0.5``, ``true`` or ``"3"`` (``1.0`` is an integer in JSON Schema 2020-12 §6.1.1 and
  is taken as ``1``); a ``number`` takes no ``false``; a ``boolean`` takes no ``0``. Query values are read as
  the JSON type their schema declares (``"3"`` → ``3``, ``"true"`` → ``true``, ``"0.5"`` → ``0.5``) and only
  then validated, so ``?limit=0.5`` or ``?limit=true`` is a 422.
- **Times** (``format: date-time``) are RFC 3339 strings with an offset (``2026-01-02T03:04:05Z``), in bodies
  and query strings: pydantic alone would read ``"0.5"`` or ``1700000000`` as seconds since the epoch.

Faults become :class:`~.problems.ProblemError`: 400 for JSON that is not strict JSON, 422 with
``errors=[{location, field, message, type}]`` for values that break the schema.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from . import jsonstrict
from .errors import field_error
from .problems import ProblemError

RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
"""RFC 3339 §5.6 ``date-time`` (the space separator of §5.6's note is allowed); the offset is required."""

_INTEGER = re.compile(r"^-?(0|[1-9][0-9]*)$")
_NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")

_SCHEMAS: dict[type[BaseModel], dict[str, Any]] = {}


def validation_errors(exc: ValidationError, where: str, model: type[BaseModel] | None = None) -> list[dict[str, Any]]:
    """pydantic's errors as ``[{location, field, message, type}]`` (no input echoed back).

    With ``model``, ``field`` is the path a client knows — property names, array indexes and object keys —
    without pydantic's union-branch tags (``url.constrained-str``, ``url.none`` become ``url``), and a field
    gets one error: the first that is not "should be None" (the branch a client did not mean)."""
    errors = exc.errors(include_url=False, include_input=False)
    if model is None:
        return [field_error(".".join(str(p) for p in e["loc"]), e["msg"], e["type"], where) for e in errors]
    schema = _schema(model)
    defs = schema.get("$defs", {})
    out: dict[str, dict[str, Any]] = {}
    for e in sorted(errors, key=lambda e: e["type"] == "none_required"):
        field = _field_path(e["loc"], schema, defs)
        out.setdefault(field, field_error(field, e["msg"], e["type"], where))
    return list(out.values())


def _field_path(loc: tuple[str | int, ...], schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """``loc`` without the union-branch tags pydantic-core inserts: walk the JSON Schema alongside and keep
    only the steps the schema has (a property, an array index, a key of a free-form object)."""
    node: Any = schema
    parts: list[str] = []
    for step in loc:
        branches = _branches(node, defs)
        if isinstance(step, int):
            arrays = [b for b in branches if b.get("type") == "array"]
            if arrays:
                parts.append(str(step))
                node = arrays[0].get("items", {})
            continue
        owner = next((b for b in branches if step in b.get("properties", {})), None)
        if owner is not None:
            parts.append(step)
            node = owner["properties"][step]
            continue
        maps = [b for b in branches if b.get("type") == "object" and not b.get("properties")]
        if maps:  # a key of a free-form object (dict[str, X])
            parts.append(step)
            extra = maps[0].get("additionalProperties")
            node = extra if isinstance(extra, dict) else {}
        # anything else is a union-branch tag: no step of the client's document
    return ".".join(parts)


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    cached = _SCHEMAS.get(model)
    if cached is None:
        cached = _SCHEMAS[model] = model.model_json_schema(mode="validation")
    return cached


def _resolve(node: Any, defs: dict[str, Any]) -> dict[str, Any]:
    while isinstance(node, dict) and "$ref" in node:
        node = defs.get(str(node["$ref"]).rsplit("/", 1)[-1], {})
    return node if isinstance(node, dict) else {}


def _branches(node: Any, defs: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives a value may match (``anyOf``/``oneOf`` flattened, ``$ref`` resolved)."""
    node = _resolve(node, defs)
    alts = node.get("anyOf") or node.get("oneOf")
    if not alts:
        return [node]
    out: list[dict[str, Any]] = []
    for alt in alts:
        out.extend(_branches(alt, defs))
    return out


def _types(branches: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for b in branches:
        t = b.get("type")
        if isinstance(t, list):
            found.update(str(x) for x in t)
        elif isinstance(t, str):
            found.add(t)
        elif "enum" in b or "const" in b:
            found.add("string")
        else:
            found.add("any")
    return found


def _conform(value: Any, node: Any, defs: dict[str, Any], path: list[str | int], out: list[dict[str, Any]]) -> Any:
    """``value`` read the way JSON Schema reads it against ``node``; faults pydantic would miss go to ``out``.

    - a number with no fractional part where only an ``integer`` fits becomes an ``int`` (JSON Schema 2020-12
      §6.1.1: ``1.0`` is an integer; ``0.5`` and ``true`` are not, and strict validation refuses them);
    - a string where only ``format: date-time`` strings fit must be RFC 3339 (:data:`RFC3339`).

    Walks objects (``properties``/``additionalProperties``), arrays (``items``) and unions.
    """
    branches = _branches(node, defs)
    if isinstance(value, float):
        types = _types(branches)
        if value.is_integer() and "integer" in types and "number" not in types and "any" not in types:
            return int(value)
    elif isinstance(value, str):
        strings = [b for b in branches if b.get("type") == "string" or "type" not in b]
        if strings and all(b.get("format") == "date-time" for b in strings) and not RFC3339.match(value):
            out.append(_fault(path, "Input should be an RFC 3339 date-time with an offset, e.g. 2026-01-02T03:04:05Z"))
    elif isinstance(value, dict):
        for b in branches:
            if b.get("type") != "object":
                continue
            props = b.get("properties", {})
            extra = b.get("additionalProperties")
            conformed: dict[str, Any] = {}
            for key, item in value.items():
                sub = props.get(key, extra if isinstance(extra, dict) else None)
                conformed[key] = item if sub is None else _conform(item, sub, defs, [*path, key], out)
            return conformed
    elif isinstance(value, list):
        for b in branches:
            if b.get("type") == "array" and isinstance(b.get("items"), dict):
                return [_conform(item, b["items"], defs, [*path, i], out) for i, item in enumerate(value)]
    return value


def _fault(path: list[str | int], message: str) -> dict[str, Any]:
    return {"field": ".".join(str(p) for p in path), "message": message, "type": "datetime_format"}


def _validate(model: type[BaseModel], value: Any, where: str) -> BaseModel:
    schema = _schema(model)
    faults: list[dict[str, Any]] = []
    value = _conform(value, schema, schema.get("$defs", {}), [], faults)
    what = "request body" if where == "body" else "query string"
    if faults:
        raise ProblemError(422, f"The {what} is invalid", errors=[{"location": where, **f} for f in faults])
    try:
        return model.model_validate_json(jsonstrict.dumps(value), strict=True)
    except ValidationError as exc:
        raise ProblemError(422, f"The {what} is invalid", errors=validation_errors(exc, where, model)) from exc


def parse_body(raw: bytes, model: type[BaseModel]) -> BaseModel:
    """Validate a JSON request body against ``model``.

    :param raw: the body as received (UTF-8 JSON).
    :raises ProblemError: 400 when ``raw`` is not strict JSON; 422 with field errors when it breaks the model.
    """
    try:
        value = jsonstrict.loads(raw)
    except jsonstrict.InvalidJSON as exc:
        detail = "The body is empty" if not raw.strip() else f"The body is not valid JSON ({exc})"
        raise ProblemError(400, detail) from None
    return _validate(model, value, "body")


def _typed(text: str, node: Any, defs: dict[str, Any]) -> Any:
    """A query value read as the JSON type its schema declares; left a string when it is not one."""
    types = _types(_branches(node, defs))
    if "string" in types or "any" in types:
        return text
    if "boolean" in types and text in ("true", "false"):
        return text == "true"
    if ("integer" in types or "number" in types) and _INTEGER.match(text):
        return int(text)
    if ("integer" in types or "number" in types) and _NUMBER.match(text):
        number = float(text)
        return number if math.isfinite(number) else text  # an integral one becomes an int in _conform
    return text


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (from %ED%A0%80 or undecodable bytes)
        return False
    return True


def query_fields(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """The query model's properties by name (their JSON schemas)."""
    props: dict[str, dict[str, Any]] = _schema(model).get("properties", {})
    return props


def parse_query(query: Any, model: type[BaseModel]) -> BaseModel:
    """Validate a query string (``MultiDict`` of strings) against ``model``.

    A field whose schema is an array takes every occurrence (``?s=a&s=b``); any other takes the last one.

    :raises ProblemError: 422 with field errors.
    """
    schema = _schema(model)
    defs = schema.get("$defs", {})
    props = query_fields(model)
    raw: dict[str, Any] = {}
    for key in set(query.keys()):
        values: list[str] = query.getall(key)
        if not all(_is_unicode(v) for v in [key, *values]):
            raise ProblemError(400, "The query string is not valid UTF-8")
        node = props.get(key)
        if node is None:
            raw[key] = values[-1]
            continue
        arrays = [b for b in _branches(node, defs) if b.get("type") == "array"]
        if arrays:
            raw[key] = [_typed(v, arrays[0].get("items", {}), defs) for v in values]
        else:
            raw[key] = _typed(values[-1], node, defs)
    return _validate(model, raw, "query")
