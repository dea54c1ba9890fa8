"""Application events posted to the service (``POST /events``): an organisation's own event types start the
runs of the definitions whose trigger names them. Raises domain errors; knows no HTTP."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from novapulse_runtime.bus import new_event_id
from novapulse_runtime.clock import utcnow
from novapulse_runtime.errors import field_error

from .constants import MAX_APP_EVENT_BYTES, MAX_RUNS_PER_EVENT
from .errors import EventIdReused, EventTooLarge, NotAnApplicationEventType, UnstorableData
from .expressions import json_size
from .language import is_application_type
from .repository import Repository
from .starting import start_triggered

APP_SOURCE = "app"
"""The ``source`` of a posted application event, as expressions see it (``event.source``)."""


@dataclass(frozen=True)
class Accepted:
    """The answer to a posted event: its id, the runs it started (up to ``MAX_RUNS_PER_EVENT``), and whether
    the same event had been posted before."""

    event_id: str
    runs: list[str]
    duplicate: bool


def unstorable(value: Any, path: str = "data") -> str | None:
    """The path of the first part of ``value`` (parsed JSON) a document cannot hold — a key with a NUL
    character or starting with ``$``, text with a lone surrogate (``"\\ud800"``) — or ``None``."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key or key.startswith("$") or unstorable(key) is not None:
                return f"{path}.{key.encode('utf-8', 'backslashreplace').decode()[:50]}"
            found = unstorable(item, f"{path}.{key}")
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = unstorable(item, f"{path}.{i}")
            if found is not None:
                return found
    return None


def event_id_for(org_id: str, event_id: str | None, idempotency_key: str | None) -> str:
    """The id of a posted event: the caller's ``event_id``; else one derived from the ``Idempotency-Key``
    (``ak_`` + 32 hex of SHA-256 of organisation and key, so a retried request names the same event); else a
    new UUIDv7."""
    if event_id:
        return event_id
    if idempotency_key:
        return "ak_" + hashlib.sha256(f"{org_id}\x00{idempotency_key}".encode()).hexdigest()[:32]
    return new_event_id()


class AppEvents:
    """Accepts an organisation's application events and starts the runs they trigger."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def accept(
        self,
        org_id: str,
        user_id: str,
        type_: str,
        data: dict[str, Any],
        subject: str | None = None,
        *,
        event_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """Start a run of every enabled definition of ``org_id`` triggered by ``type_`` whose filter holds,
        with the trigger event ``{id, type, source: "app", time, org_id, subject, data}``.

        Idempotent per event id (the caller's ``event_id``, or one derived from ``idempotency_key``): the
        same event posted again starts nothing new and answers the runs the first post started
        (``duplicate`` true) — a post that stopped half-way is finished; the same id with a different
        ``type``/``subject``/``data`` is refused (409, a conflict with the stored event; the draft
        Idempotency-Key header, §2.7, suggests 422, but the request is valid in itself).

        :raises NotAnApplicationEventType: ``type_`` is a catalogue type, under a platform domain, or not
            lower-case dotted words (422, ``errors`` names ``type``).
        :raises UnstorableData: a key with a NUL character or a leading ``$``, or a lone surrogate (422).
        :raises EventTooLarge: ``data`` is over ``MAX_APP_EVENT_BYTES`` bytes as JSON (413).
        :raises EventIdReused: the id was posted before with a different event (409).
        """
        if not is_application_type(type_):
            raise NotAnApplicationEventType(
                f"{type_[:100]!r} is not an application event type",
                errors=[
                    field_error(
                        "type",
                        "lower-case dotted words, neither a platform event type nor under a platform domain",
                        "not_application_type",
                        location="body",
                    )
                ],
            )
        fault = unstorable(data) or (unstorable(subject, "subject") if subject is not None else None)
        if fault is not None:
            raise UnstorableData(
                "The event holds a key with a NUL character or a leading $, or text with a lone surrogate",
                errors=[field_error(fault, "not storable", "unstorable", location="body")],
            )
        if json_size(data) > MAX_APP_EVENT_BYTES:
            raise EventTooLarge(f"The event data exceeds {MAX_APP_EVENT_BYTES} bytes")
        eid = event_id_for(org_id, event_id, idempotency_key)
        fingerprint = hashlib.sha256(
            json.dumps([type_, subject, data], sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        event = {
            "id": eid,
            "type": type_,
            "source": APP_SOURCE,
            "time": utcnow().isoformat(),
            "org_id": org_id,
            "subject": subject,
            "data": data,
        }
        kept, fresh = await self.repo.insert_app_event(org_id, event, fingerprint, user_id)
        if kept["fingerprint"] != fingerprint:
            raise EventIdReused("This event id (or Idempotency-Key) was used for a different event")
        await start_triggered(self.repo, kept["event"])
        runs = await self.repo.runs_of_event(org_id, eid, MAX_RUNS_PER_EVENT)
        return Accepted(eid, runs, not fresh)
