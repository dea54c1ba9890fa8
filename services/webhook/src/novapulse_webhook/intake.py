"""Intake: a platform event, fanned out by the bus consumer, becomes one message per subscribed endpoint.
Fresh messages are claimed by this worker as they are inserted and go straight to their lanes (no poll)."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from novapulse_runtime import jsonstrict
from novapulse_runtime.bus import PermanentError
from novapulse_runtime.catalog import CATALOG
from novapulse_runtime.clock import utcnow
from novapulse_runtime.documents import Doc

from .constants import EVENT_TYPE_PATTERN, MAX_EVENT_TYPE
from .dispatcher import Dispatcher, Job
from .endpoints import EndpointCache
from .fanout import payload_body, subscribed
from .recorder import Recorder
from .repository import Repository, message_doc, message_insert
from .writer import BatchWriter

log = logging.getLogger("novapulse.webhook.worker")

Submit = Callable[[Job, Doc | None], bool]
"""Puts a claimed job in its endpoint's lane (configured from the endpoint); False when the lane is full."""


class Intake:
    """Turns events into messages.

    :param lease: how long a claim taken at insert lasts before it must be renewed.
    :param submit: puts a claimed job in its lane (``DeliveryWorker.submit``).
    :param wake: asks the poller to look for due messages now.
    """

    def __init__(
        self,
        repo: Repository,
        writer: BatchWriter,
        endpoints: EndpointCache,
        dispatcher: Dispatcher,
        recorder: Recorder,
        lease: timedelta,
        submit: Submit,
        wake: Callable[[], None],
    ) -> None:
        self.repo = repo
        self.writer = writer
        self.endpoints = endpoints
        self.dispatcher = dispatcher
        self.recorder = recorder
        self.lease = lease
        self.submit = submit
        self.wake = wake
        self.closing = False
        """Set when the worker stops: messages are then inserted due, never pre-claimed."""

    async def on_event(
        self,
        event_id: str,
        org_id: str,
        event_type: str,
        data: Mapping[str, Any],
        when: datetime,
        *,
        application: bool = False,
    ) -> int:
        """Fan an event out to the organisation's subscribed endpoints; returns how many messages were stored
        (an event seen before stores none). A platform event goes out only when its catalogue type is public;
        an ``application`` event (an organisation's own type, sent by a workflow's ``emit`` step) goes out
        under its own type name, which must not be a catalogue type (an organisation cannot forge platform
        events).

        :raises novapulse_runtime.bus.PermanentError: ``data`` cannot be written as strict JSON (RFC 8259), or
            an application event names a catalogue type or an invalid type name: retrying cannot help, the bus
            dead-letters the event with the reason.
        """
        et = CATALOG.lookup(event_type)
        if application:
            if et is not None:
                raise PermanentError(f"an application event cannot take the platform type {event_type!r}")
            if len(event_type) > MAX_EVENT_TYPE or not re.fullmatch(EVENT_TYPE_PATTERN, event_type):
                raise PermanentError(f"not an event type name: {event_type[:140]!r}")
        elif et is None or not et.public:
            return 0
        if not org_id:
            return 0
        endpoints = subscribed(await self.endpoints.org_endpoints(org_id), event_type)
        if not endpoints:
            return 0
        now = utcnow()
        try:
            body = payload_body(event_type, data, when)
        except jsonstrict.InvalidJSON as exc:  # retrying cannot help: dead-letter it with the reason
            raise PermanentError(f"event data cannot be written as strict JSON: {exc}") from exc
        lease_until = now + self.lease
        docs, jobs = [], []
        for ep in endpoints:
            claim = None if self.closing or not self.dispatcher.has_room(ep["_id"]) else uuid.uuid4().hex
            doc = message_doc(
                org_id=org_id,
                endpoint_id=ep["_id"],
                event_id=event_id,
                event_type=event_type,
                body=body,
                now=now,
                claim=claim,
                lease_until=lease_until,
            )
            docs.append(doc)
            if claim:
                jobs.append((doc, ep))
        if self.writer.closed:  # shutting down: plain inserts, nothing pre-claimed is left to run
            inserted = await self.repo.insert_messages(docs)
            jobs = []
        else:
            stored = await asyncio.gather(*(self.writer.put(message_insert(d)) for d in docs))
            inserted = {d["_id"] for d, ok in zip(docs, stored, strict=True) if ok}
        submitted = 0
        for doc, ep in jobs:
            if doc["_id"] not in inserted:
                continue
            if self.submit(Job.from_doc(doc, doc["claim"], lease_until), ep):
                submitted += 1
            else:
                self.recorder.release(doc["_id"], doc["claim"])  # its lane filled up meanwhile: the poller takes it
        if len(inserted) < len(docs):
            log.info("duplicate event ignored", extra={"event_id": event_id, "skipped": len(docs) - len(inserted)})
        if submitted < len(inserted):
            # Only messages stored unclaimed (or given back) need the poller; waking it after every event
            # cost a claim query per event (and, with several workers, each of them polling the same documents).
            self.wake()
        return len(inserted)
