"""Generate the AsyncAPI 3.0 document of the event catalogue: ``python -m novapulse_runtime.bus.asyncapi``.

Writes ``docs/asyncapi.yaml`` (or the path given; ``-`` for stdout). The test suite checks the committed
file is up to date.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from ..catalog import CATALOG, EventType
from .constants import DEFAULT_NAMESPACE, MAX_ENTRY_BYTES
from .keys import Keys

DEFAULT_PATH = Path("docs/asyncapi.yaml")
_PLAIN_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_.$-]*$")

ENVELOPE_FIELDS: dict[str, dict[str, Any]] = {
    "id": {
        "type": "string",
        "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$",
        "description": "Event id, unique per event: a UUIDv7 (or a ULID). Dedupe on it.",
    },
    "type": {"type": "string", "description": "Event type, e.g. user.registered (one of the messages here)."},
    "source": {
        "type": "string",
        "description": "Producing service: the type's producer in the catalogue; equals the stream suffix.",
    },
    "time": {"type": "string", "format": "date-time", "description": "When it happened, RFC 3339 with offset."},
    "org_id": {
        "type": "string",
        "description": "Organisation of the event (may be absent); must equal data.org_id where data has one.",
    },
    "subject": {"type": "string", "description": "Aggregate the event is about, e.g. a user id (may be absent)."},
    "data": {
        "type": "string",
        "contentMediaType": "application/json",
        "description": "The JSON object, strict RFC 8259 (no NaN, Infinity, 1e999, lone surrogates; depth <= 200).",
    },
    "schema": {"type": "string", "pattern": "^[0-9]{1,9}$", "description": "Schema version of data (integer)."},
    "traceparent": {"type": "string", "description": "W3C trace context (optional)."},
    "tracestate": {"type": "string", "description": "W3C trace state (optional)."},
}


def build_document(namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a dict."""
    keys = Keys(namespace)
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    by_source: dict[str, list[EventType]] = {}
    for et in CATALOG.all_types():
        by_source.setdefault(et.source, []).append(et)
        model_schema = et.model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in model_schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[et.model.__name__] = model_schema
        properties = {k: dict(v) for k, v in ENVELOPE_FIELDS.items()}
        properties["type"] = {**properties["type"], "const": et.name}
        properties["source"] = {**properties["source"], "const": et.source}
        properties["schema"] = {**properties["schema"], "const": str(et.version)}
        properties["data"] = {
            **properties["data"],
            "description": f"JSON object matching {et.model.__name__} (x-data-schema).",
            "x-data-schema": {"$ref": f"#/components/schemas/{et.model.__name__}"},
        }
        messages[et.name] = {
            "name": et.name,
            "title": et.name,
            "summary": et.description.splitlines()[0] if et.description else et.name,
            "contentType": "application/json",
            "payload": {
                "type": "object",
                "description": "Flat fields of one Redis stream entry (all values are strings).",
                "required": ["id", "type", "source", "time", "data", "schema"],
                "properties": properties,
            },
            "x-novapulse-public": et.public,
            "x-novapulse-schema-version": et.version,
        }
    for source, types in sorted(by_source.items()):
        refs = {t.name: {"$ref": f"#/components/messages/{t.name}"} for t in types}
        channels[source] = {
            "address": keys.stream(source),
            "title": f"Events of the {source} service",
            "description": f"Redis stream written by the {source} service (XADD); read with consumer groups.",
            "messages": refs,
        }
        operations[f"publish-{source}"] = {
            "action": "send",
            "title": f"Publish an event of the {source} service",
            "channel": {"$ref": f"#/channels/{source}"},
            "messages": [{"$ref": f"#/channels/{source}/messages/{t.name}"} for t in types],
        }
        operations[f"consume-{source}"] = {
            "action": "receive",
            "title": f"Consume events of the {source} service with a consumer group (XREADGROUP)",
            "channel": {"$ref": f"#/channels/{source}"},
            "messages": [{"$ref": f"#/channels/{source}/messages/{t.name}"} for t in types],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "NovaPulse events",
            "version": "1.0.0",
            "description": (
                "Events on Redis Streams. Each entry is a set of flat UTF-8 string fields (the envelope); `data` "
                "is the strict JSON of the type's schema. Entries that are malformed, of an unknown type, on "
                "another producer's stream or with another source, whose data does not validate or names "
                f"another org_id than the envelope, or larger than {MAX_ENTRY_BYTES} bytes go to the consumer "
                "group's dead-letter stream (reasons: docs/events.md section 2). "
                "Generated from the event catalogue by `python -m novapulse_runtime.bus.asyncapi`; see "
                "docs/events.md."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "redis": {
                "host": "redis:6379",
                "protocol": "redis",
                "description": "The platform's Redis (streams); the host depends on the deployment.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


def _key(key: str) -> str:
    return (
        key
        if _PLAIN_KEY.match(key) and key not in ("true", "false", "null", "on", "off", "yes", "no")
        else _scalar(key)
    )


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML emitter for JSON-like data (strings always quoted, so no YAML type surprises)."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{_key(str(k))}:\n{to_yaml(v, indent + 1)}")
            else:
                empty = "{}" if isinstance(v, dict) else "[]" if isinstance(v, list) else _scalar(v)
                lines.append(f"{pad}{_key(str(k))}: {empty}\n")
        return "".join(lines)
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        for item in value:
            if isinstance(item, dict | list) and item:
                body = to_yaml(item, indent + 1)
                lines.append(f"{pad}- {body.lstrip()}")
            else:
                empty = "{}" if isinstance(item, dict) else "[]" if isinstance(item, list) else _scalar(item)
                lines.append(f"{pad}- {empty}\n")
        return "".join(lines)
    return pad + _scalar(value) + "\n"


def render() -> str:
    return "# Generated by `python -m novapulse_runtime.bus.asyncapi`; do not edit.\n" + to_yaml(build_document())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m novapulse_runtime.bus.asyncapi", description=__doc__)
    parser.add_argument("path", nargs="?", default=str(DEFAULT_PATH), help="output file, '-' for stdout")
    args = parser.parse_args(argv)
    text = render()
    if args.path == "-":
        sys.stdout.write(text)
    else:
        Path(args.path).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
