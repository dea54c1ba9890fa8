"""Turning one event into messages: the payload bytes (signed and sent as they are) and the endpoints that
get one message each (the message document itself is :func:`.repository.message_doc`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from novapulse_runtime import jsonstrict
from novapulse_runtime.documents import Doc

from .constants import SELF_EVENTS
from .domain import matches


def payload_body(event_type: str, data: Mapping[str, Any], timestamp: datetime) -> str:
    """The Standard Webhooks payload ``{"type", "timestamp", "data"}`` as compact strict JSON (RFC 8259:
    no ``NaN``/``Infinity``, written by :func:`novapulse_runtime.jsonstrict.dumps`); stored once so every
    attempt sends (and signs) byte-identical bytes.

    :raises novapulse_runtime.jsonstrict.InvalidJSON: ``data`` holds a non-finite number or a value that is
        not JSON.
    """
    return jsonstrict.dumps(
        {"type": event_type, "timestamp": timestamp.isoformat().replace("+00:00", "Z"), "data": dict(data)}
    )


def subscribed(endpoints: Iterable[Doc], event_type: str) -> list[Doc]:
    """The enabled endpoints whose filters match ``event_type``. This service's own announcements
    (``webhook.message.failed``, ``webhook.endpoint.disabled``) only go to endpoints that name them
    (exactly or by ``webhook.*``), never to catch-all endpoints: a failing endpoint is not sent news of its
    own failures unless it asked for them."""
    found = []
    for e in endpoints:
        filters = e.get("event_types") or []
        if not e.get("enabled") or not matches(filters, event_type):
            continue
        if event_type in SELF_EVENTS and not matches([f for f in filters if f != "*"] or ["-"], event_type):
            continue
        found.append(e)
    return found
