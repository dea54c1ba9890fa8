"""The event envelope: flat string fields on a Redis stream entry, readable and writable from any language.

See ``docs/events.md`` for the contract field by field.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .. import jsonstrict
from ..catalog import CATALOG, EventType
from .constants import (
    F_DATA,
    F_ID,
    F_ORG,
    F_SCHEMA,
    F_SOURCE,
    F_SUBJECT,
    F_TIME,
    F_TRACEPARENT,
    F_TRACESTATE,
    F_TYPE,
    MAX_ENTRY_BYTES,
    REQUIRED_FIELDS,
)

M = TypeVar("M", bound=BaseModel)


class DeadReason(StrEnum):
    """Why an entry went to the dead-letter stream (the ``dead_reason`` field; stable names, listed in
    ``docs/events.md`` §2)."""

    MALFORMED = "malformed"  # missing field, not UTF-8, bad id, bad or non-strict JSON, bad time or schema
    INVALID_DATA = "invalid_data"  # data does not match the catalogue model of its type
    UNKNOWN_TYPE = "unknown_type"  # the type is not in the catalogue
    WRONG_SOURCE = "wrong_source"  # the ``source`` field is not the type's producer in the catalogue
    WRONG_STREAM = "wrong_stream"  # the entry sits on a stream other than its producer's (or its group's replay)
    ORG_MISMATCH = "org_mismatch"  # the envelope's ``org_id`` differs from ``data.org_id``
    OVERSIZED = "oversized"
    HANDLER_FAILED = "handler_failed"  # the delivery cap was reached
    TIMEOUT = "timeout"  # the delivery cap was reached, the last attempt timed out
    REJECTED = "rejected"  # the handler raised PermanentError: retrying cannot help


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help (the event names a template that does not exist,
    say): the entry goes to the dead-letter stream at once, with reason ``rejected``, instead of after the
    delivery cap."""


class MalformedEntry(Exception):
    """An entry that can never be handled; it goes to the dead-letter stream with ``reason``."""

    def __init__(self, reason: DeadReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562), strictly increasing within this process (12-bit counter in ``rand_a``)."""
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _seq = ms, random.getrandbits(11)
        else:
            _seq += 1
            if _seq > 0xFFF:  # counter exhausted within one millisecond: borrow the next one
                _last_ms, _seq = _last_ms + 1, 0
            ms = _last_ms
        seq = _seq
    # random is re-seeded in forked children, so processes do not share sequences
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | random.getrandbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def derived_event_id(ms: int, *parts: str) -> str:
    """A UUIDv7-shaped event id (RFC 9562 layout, version 7) that is the same for the same inputs: its time
    field is ``ms`` (epoch milliseconds; the outbox relays by id, so it keeps the event near its time) and its
    random fields are SHA-256 of ``parts``. A producer that may redo a write after a crash derives the id from
    what it redoes, so the copy carries the same id and consumers drop it (§5 of ``docs/events.md``)."""
    digest = int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:10], "big")
    rand_a = digest >> 68 & 0xFFF
    rand_b = digest & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def lookup(name: str) -> EventType | None:
    """The catalogue type called ``name`` (:data:`~novapulse_runtime.catalog.CATALOG`); ``None`` for a type
    outside the catalogue."""
    return CATALOG.lookup(name)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. ``2026-11-28T12:00:00.123Z``."""
    if moment.tzinfo is UTC:  # already UTC (every event built here): its isoformat ends in "+00:00"
        return moment.isoformat(timespec="milliseconds")[:-6] + "Z"
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("time has no UTC offset")
    return moment


@dataclass(frozen=True, slots=True)
class Event:
    """One event as a handler sees it.

    ``data`` is the validated pydantic model of the catalogue type (a dict for types outside the catalogue).
    ``stream``, ``entry_id`` and ``deliveries`` describe the stream entry it came from (empty before
    publishing).
    """

    id: str
    type: str
    source: str
    time: datetime
    data: Any
    org_id: str | None = None
    subject: str | None = None
    schema_version: int = 1
    traceparent: str | None = None
    tracestate: str | None = None
    stream: str = ""
    entry_id: str = ""
    deliveries: int = 0
    fields: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def data_as(self, model: builtins.type[M]) -> M:
        """``data`` as ``model``: the object itself when it already is one, else validated into one."""
        if isinstance(self.data, model):
            return self.data
        raw = self.data.model_dump(mode="json") if isinstance(self.data, BaseModel) else self.data
        result: M = model.model_validate(raw)
        return result

    def to_fields(self) -> dict[str, str]:
        """The stream fields of this event (``fields`` when it was read from a stream)."""
        if self.fields:
            return dict(self.fields)
        return encode(self)


_EVENT_FIELDS = (
    "id",
    "type",
    "source",
    "time",
    "data",
    "org_id",
    "subject",
    "schema_version",
    "traceparent",
    "tracestate",
    "stream",
    "entry_id",
    "deliveries",
    "fields",
)
if tuple(f.name for f in dataclass_fields(Event)) != _EVENT_FIELDS:  # pragma: no cover - caught at import
    raise RuntimeError("Event's fields changed: update _EVENT_FIELDS and _read_event")
(
    _set_id,
    _set_type,
    _set_source,
    _set_time,
    _set_data,
    _set_org_id,
    _set_subject,
    _set_schema_version,
    _set_traceparent,
    _set_tracestate,
    _set_stream,
    _set_entry_id,
    _set_deliveries,
    _set_fields,
) = (getattr(Event, name).__set__ for name in _EVENT_FIELDS)
_new = object.__new__


def _read_event(
    id: str,
    type: str,
    source: str,
    time: datetime,
    data: Any,
    org_id: str | None,
    subject: str | None,
    schema_version: int,
    traceparent: str | None,
    tracestate: str | None,
    stream: str,
    entry_id: str,
    deliveries: int,
    fields: dict[str, str],
) -> Event:
    """``Event(...)`` with every field given, for :func:`decode` (once per consumed event): the frozen
    dataclass's ``__init__`` goes through ``object.__setattr__`` per field, a quarter of decoding; this sets
    the slots directly (equal to ``Event(...)``, tested)."""
    event: Event = _new(Event)
    _set_id(event, id)
    _set_type(event, type)
    _set_source(event, source)
    _set_time(event, time)
    _set_data(event, data)
    _set_org_id(event, org_id)
    _set_subject(event, subject)
    _set_schema_version(event, schema_version)
    _set_traceparent(event, traceparent)
    _set_tracestate(event, tracestate)
    _set_stream(event, stream)
    _set_entry_id(event, entry_id)
    _set_deliveries(event, deliveries)
    _set_fields(event, fields)
    return event


EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
"""An event id: UUIDv7, ULID or another token of at most 128 letters, digits and ``_.:-``."""
SCHEMA = re.compile(r"[0-9]{1,9}")


def data_json(data: Any) -> str:
    """``data`` as strict JSON text (RFC 8259: ``allow_nan=False``; a model's NaN cannot be written)."""
    if isinstance(data, BaseModel):
        return data.model_dump_json()
    return json.dumps(data, separators=(",", ":"), default=str, allow_nan=False, ensure_ascii=False)


def org_of(data: Any) -> str | None:
    """``data.org_id`` of a catalogue model that has one (``None`` otherwise)."""
    value = getattr(data, "org_id", None)
    return value if isinstance(value, str) and value else None


def build(
    type_: str,
    data: BaseModel | dict[str, Any],
    *,
    source: str,
    org_id: str | None = None,
    subject: str | None = None,
    event_id: str | None = None,
) -> Event:
    """A new event of ``type_`` from ``source``; ``data`` is checked against the catalogue model.

    ``event_id`` (default: a fresh UUIDv7) lets a producer whose effect may be redone after a crash give the
    redone event the same id, so consumers dedupe it (it must match :data:`EVENT_ID`; else ``ValueError``).

    ``org_id`` defaults to ``data.org_id`` when the model has one. Raises ``ValueError`` for a catalogue type
    produced by another service or an ``org_id`` that differs from ``data.org_id`` (consumers would
    dead-letter it as ``org_mismatch``), ``TypeError`` for a model of the wrong class, and pydantic's
    ``ValidationError`` for a dict that does not match the model.
    """
    et = lookup(type_)
    version = 1
    if et is not None:
        if et.source != source:
            raise ValueError(f"event type {type_} is produced by {et.source}, not {source}")
        version = et.version
        if isinstance(data, dict):
            data = et.model.model_validate(data)
        elif not isinstance(data, et.model):
            raise TypeError(f"{type_} data must be {et.model.__name__}, not {type(data).__name__}")
        inner = org_of(data)
        if inner is not None:
            if org_id and org_id != inner:
                raise ValueError(f"{type_}: org_id {org_id!r} differs from data.org_id {inner!r}")
            org_id = inner
    elif not isinstance(data, BaseModel | dict):
        raise TypeError("event data must be a pydantic model or a dict")
    if event_id is not None and not EVENT_ID.fullmatch(event_id):
        raise ValueError(f"event id {event_id[:140]!r} does not match {EVENT_ID.pattern}")
    return Event(
        id=event_id or new_event_id(),
        type=type_,
        source=source,
        time=datetime.now(UTC),
        data=data,
        org_id=org_id,
        subject=subject,
        schema_version=version,
    )


def encode(event: Event, traceparent: str | None = None, tracestate: str | None = None) -> dict[str, str]:
    """The flat stream fields of ``event`` (absent optional fields are left out).

    Raises ``ValueError`` when the entry would exceed ``MAX_ENTRY_BYTES``, ``data`` holds NaN or an
    infinity, or a value is not valid Unicode (a lone surrogate cannot be written as UTF-8)."""
    fields = {
        F_ID: event.id,
        F_TYPE: event.type,
        F_SOURCE: event.source,
        F_TIME: format_time(event.time),
        F_SCHEMA: str(event.schema_version),
        F_DATA: data_json(event.data),
    }
    if event.org_id:
        fields[F_ORG] = event.org_id
    if event.subject:
        fields[F_SUBJECT] = event.subject
    tp = traceparent or event.traceparent
    ts = tracestate or event.tracestate
    if tp:
        fields[F_TRACEPARENT] = tp
    if ts:
        fields[F_TRACESTATE] = ts
    values = "".join(fields.values())
    if not values.isascii():  # one check for the common case; else find the field that cannot be UTF-8
        for name, value in fields.items():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ValueError(f"event {event.type}: {name} is not valid Unicode (lone surrogate)") from None
    size = sum(map(len, fields)) + len(values)  # field names are ASCII
    if size * 4 > MAX_ENTRY_BYTES:  # a character is at most 4 bytes: count the bytes only when it could matter
        size = entry_size(fields)
    if size > MAX_ENTRY_BYTES:
        raise ValueError(f"event {event.type} is {size} bytes; the limit is {MAX_ENTRY_BYTES}")
    return fields


def with_trace(event: Event, fields: dict[str, str]) -> Event:
    """``event`` with the trace context its encoded ``fields`` carry."""
    return replace(event, traceparent=fields.get(F_TRACEPARENT), tracestate=fields.get(F_TRACESTATE))


def entry_size(fields: dict[str, str]) -> int:
    """Bytes of field names and UTF-8 values; a cheap character count when that cannot exceed the limit."""
    chars = sum(map(len, fields)) + sum(map(len, fields.values()))
    if chars * 4 <= MAX_ENTRY_BYTES:  # a character is at most 4 bytes: surely under the limit
        return chars
    return sum(len(k.encode()) + len(v.encode()) for k, v in fields.items())


def check_envelope(fields: dict[str, str] | None) -> None:
    """Raise :class:`MalformedEntry` unless the required fields are present, the id is an event id
    (:data:`EVENT_ID`) and the entry is not too big (``oversized``)."""
    if not fields:
        raise MalformedEntry(DeadReason.MALFORMED, "entry has no fields")
    size = entry_size(fields)
    if size > MAX_ENTRY_BYTES:
        raise MalformedEntry(DeadReason.OVERSIZED, f"entry is {size} bytes; the limit is {MAX_ENTRY_BYTES}")
    if not all(map(fields.get, REQUIRED_FIELDS)):  # every one present and not empty (a C loop; the list on failure)
        missing = [f for f in REQUIRED_FIELDS if not fields.get(f)]
        raise MalformedEntry(DeadReason.MALFORMED, f"missing field(s): {', '.join(missing)}")
    if not EVENT_ID.fullmatch(fields[F_ID]):
        raise MalformedEntry(DeadReason.MALFORMED, "id is not an event id (1-128 of A-Z a-z 0-9 _ . : -)")


def decode(
    fields: dict[str, str],
    *,
    stream: str = "",
    entry_id: str = "",
    deliveries: int = 0,
    typed: bool = True,
    checked: bool = False,
) -> Event:
    """Parse and validate stream fields into an :class:`Event`; raise :class:`MalformedEntry` if impossible.

    ``data`` must be strict JSON (:func:`novapulse_runtime.jsonstrict.loads`: no NaN/Infinity/1e999, lone
    surrogates or nesting deeper than 200) holding an object. The data of a catalogue type is always
    validated against its model (``invalid_data``) and its ``org_id``, where the model has one, must equal
    the envelope's (``org_mismatch``; an empty envelope ``org_id`` takes the data's). With ``typed`` the
    event carries the model, else the validated JSON object as a dict; a type outside the catalogue keeps
    its data as a dict. ``checked`` skips :func:`check_envelope` (already done by the caller). Any other
    failure of parsing is reported as ``malformed`` with its cause, never raised as is.
    """
    try:
        return _decode(fields, stream, entry_id, deliveries, typed, checked)
    except MalformedEntry:
        raise
    except Exception as exc:  # any fault of foreign input is a data error, never a crash
        reason = f"cannot decode the entry: {type(exc).__name__}: {exc}"[:500]
        raise MalformedEntry(DeadReason.MALFORMED, reason) from exc


def _decode(fields: dict[str, str], stream: str, entry_id: str, deliveries: int, typed: bool, checked: bool) -> Event:
    if not checked:
        check_envelope(fields)
    try:
        moment = parse_time(fields[F_TIME])
    except ValueError as exc:
        raise MalformedEntry(DeadReason.MALFORMED, f"time is not RFC 3339: {exc}") from exc
    schema = fields[F_SCHEMA]
    if not SCHEMA.fullmatch(schema):
        raise MalformedEntry(DeadReason.MALFORMED, "schema is not an integer")
    try:
        raw = jsonstrict.loads(fields[F_DATA])
    except jsonstrict.InvalidJSON as exc:
        raise MalformedEntry(DeadReason.MALFORMED, f"data is not strict JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise MalformedEntry(DeadReason.MALFORMED, "data is not a JSON object")
    data: Any = raw
    org_id = fields.get(F_ORG) or None
    et = lookup(fields[F_TYPE])
    if et is not None:
        try:
            # the model's validator itself: ``model_validate`` is this call behind a Python wrapper that cost
            # as much as the validation of a small event (~1 µs); same result, same ValidationError
            model = et.model.__pydantic_validator__.validate_python(raw)
        except ValidationError as exc:
            errors = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)
            )
            raise MalformedEntry(DeadReason.INVALID_DATA, f"data does not match {et.name}: {errors}"[:1000]) from exc
        inner = org_of(model)
        if inner is not None:
            if org_id is None:
                org_id = inner
            elif org_id != inner:
                raise MalformedEntry(DeadReason.ORG_MISMATCH, "the envelope's org_id differs from data.org_id")
        if typed:
            data = model
    return _read_event(
        fields[F_ID],
        fields[F_TYPE],
        fields[F_SOURCE],
        moment,
        data,
        org_id,
        fields.get(F_SUBJECT) or None,
        int(schema),
        fields.get(F_TRACEPARENT) or None,
        fields.get(F_TRACESTATE) or None,
        stream,
        entry_id,
        deliveries,
        fields,
    )
