"""The service layer of the worker: one event in, projection updated, notifications delivered.

Exactly-once in effect per (event, recipient, channel):

1. a delivery document keyed by (event id, recipient, channel) is inserted *before* anything is sent, with
   a lease of the inserting worker (a redelivered event finds it and does not create a second one);
2. only the lease holder sends; a document found unsettled is claimed only once its lease has run out — a
   second worker handling the same event at the same time cannot take it and retries later;
3. the mail is handed to SMTP (state ``sending``); then the document is marked ``sent`` (or ``failed`` /
   ``retrying``). The write that ends a delivery (``sent``/``failed``) adds its outcome event
   (``notification.delivered``/``notification.failed``, :mod:`.outcomes`) to the outbox in the same
   transaction (:meth:`Notifier._finish`).

Every delivery of an event is recorded (with the rendered message: its *payload*) before the first one is
sent, under a lease of this worker (``lease_owner``, ``lease_until_ms``) that a background task renews every
third of the lease while the handler runs. The lease is short (``SMTP_TIMEOUT`` + 5 s by default): when the
holder dies, every worker's take-over loop (:meth:`Notifier.take_over_once`, every ``SWEEP_INTERVAL_SECONDS``) finds the
delivery once its lease has run out and
sends it from the payload, so a killed worker's mail goes out within lease + ``SWEEP_INTERVAL_SECONDS``.

A worker killed between the relay accepting the mail (step 3) and the ``sent`` mark leaves the document
``sending``; once the lease has run out the mail is sent again, with the same ``Message-ID``. So: never a
loss, and at most one duplicate per such crash.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from pymongo.errors import PyMongoError

from novapulse_runtime.bus import Outbox
from novapulse_runtime.catalog import CATALOG
from novapulse_runtime.catalog import auth as auth_events
from novapulse_runtime.clock import now_ms, to_ms, utcnow
from novapulse_runtime.documents import Doc

from .addresses import Address, InvalidAddress, normalize
from .constants import CRITICAL_CATEGORIES, SWEEP_BATCH, SWEEP_CONCURRENCY, Channel, DeliveryState, ErrorClass
from .keys import delivery_key, notice_key, sort_key
from .limits import allow_all
from .mailer import Attempt, Mailer, build_message, message_id
from .outcomes import outcome_of
from .planning import AddressTarget, Budget, Intent, InvalidEvent, RoleTarget, UserTarget, plan, project
from .ports import InboundEvent, Observer, RecipientLimiter
from .preferences import allows
from .rendering import Rendered, Renderer, RenderError
from .repository import Repository, delivery_doc

log = logging.getLogger(__name__)

SETTLED = (DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.SUPPRESSED)


class NullObserver:
    """An :class:`~.ports.Observer` that records nothing (the default)."""

    def delivery(self, channel: str, outcome: str) -> None:
        return None

    def attempt(self, relay: str, outcome: str) -> None:
        return None


class RetryLater(Exception):
    """Something may succeed later (relay down, recipient not yet projected, another worker sending):
    the bus redelivers the event with backoff, then dead-letters it after its delivery cap."""


@dataclass(frozen=True)
class Recipient:
    """One resolved recipient: a user of the projection (``user_id`` set, with their stored preferences) or
    an address that is not a user yet (``user_id`` ``None``, e-mail only)."""

    org_id: str
    user_id: str | None
    email: str
    name: str
    organization: str
    preferences: Mapping[str, Mapping[str, bool]] | None

    @property
    def key(self) -> str:
        """Who the delivery is for in its key: the user id, or the e-mail address for a non-user."""
        return self.user_id or self.email


@dataclass(frozen=True)
class Links:
    """Where links in notifications point: ``base_url`` (``PUBLIC_BASE_URL``, no trailing slash) and the
    front end's paths of invite acceptance and e-mail verification."""

    base_url: str
    accept_path: str
    verify_path: str = "/register/verify"


@dataclass
class Work:
    """One recorded delivery this worker is about to settle: its key and stored state, and the payload
    (the rendered mail or notice) it is sent from — in memory, or from the document after a take-over."""

    org_id: str
    key: str
    channel: Channel
    event_id: str
    payload: Mapping[str, Any]
    budget_taken: bool = False


@dataclass(frozen=True)
class Opening:
    """One delivery of an event about to be recorded: its key, channel, event and label (``channel:recipient``
    for logs and retries), the document to insert, and either the payload to send it from or the outcome
    decided already (state, reason, error class)."""

    key: str
    channel: Channel
    event_id: str
    label: str
    doc: Doc
    payload: dict[str, Any] | None
    decided: tuple[DeliveryState, str, ErrorClass | None] | None


def _event_ms(event: InboundEvent) -> int:
    """The event's time (epoch ms) orders projection updates; events without one count as now."""
    moment = getattr(event, "time", None)
    if isinstance(moment, datetime):
        return to_ms(moment)
    return now_ms()


class Notifier:
    """Handles one event: updates the projection, plans, resolves recipients, records every delivery, then
    delivers on each channel. :meth:`take_over` (a worker loop) finishes deliveries whose holder died.

    :param sender: ``SMTP_FROM``, one RFC 5322 §3.4 address (the ``From`` of every mail, and the domain of
        its ``Message-ID``).
    :param links: where links in notifications point.
    :param lease_seconds: seconds a delivery stays leased to this worker without renewal (renewed every
        third of it while the worker handles it).
    :param limiter: the per-recipient e-mail budgets (:mod:`.limits`), asked once per mail before it is sent.
    :param observer: where outcomes are counted (:class:`~.observer.MetricsObserver` in production).
    :param outbox: where the end of each delivery is published (``notification.delivered`` /
        ``notification.failed``, :mod:`.outcomes`), in the transaction of the write that settles it; ``None``
        publishes nothing (tests of other concerns).
    """

    def __init__(
        self,
        repo: Repository,
        renderer: Renderer,
        mailer: Mailer,
        *,
        sender: str,
        links: Links,
        lease_seconds: float = 15.0,
        limiter: RecipientLimiter = allow_all,
        observer: Observer | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.repo = repo
        self.renderer = renderer
        self.mailer = mailer
        self.sender = sender
        self.links = links
        self.lease_seconds = lease_seconds
        self.limiter = limiter
        self.observer: Observer = observer or NullObserver()
        self.outbox = outbox
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        """This worker's name on the leases it holds."""
        self._busy: set[str] = set()
        """Deliveries a task of this worker is settling. A lease names the worker, not the task, so without
        this the take-over loop and a redelivered event's handler of the same worker could both claim one
        delivery (``claim`` accepts the owner's own lease) and send it twice."""

    async def handle(self, event: InboundEvent) -> None:
        """Process ``event``: apply its change to the user projection (ordered by the event's time), plan its
        notifications (:func:`~.planning.plan`), resolve their recipients, record every delivery, then send
        each (e-mail with a ``Message-ID`` per RFC 5322 §3.6.4 that is the same on every retry) or store it
        (in-app). A delivery already settled is left alone, so a redelivered event sends nothing twice.

        :raises InvalidEvent: the event can never produce a notification (unknown type, invalid data, no or
            two differing organisations); the bus dead-letters it at once.
        :raises RetryLater: a recipient is not projected yet, or a delivery is not settled (relays failed
            transiently, another worker holds it); the bus redelivers the event with backoff.
        :raises PyMongoError: the database failed; the event is retried.
        """
        data = self._validated(event)
        org_id = self._org(event, data)
        change = project(event.type, data)
        if change is not None:
            await self.repo.apply_user_change(change.org_id, change.user_id, change.fields, _event_ms(event))
        links = self.links
        intents = plan(
            event.type, data, base_url=links.base_url, accept_path=links.accept_path, verify_path=links.verify_path
        )
        opened: list[tuple[Work | None, DeliveryState, str]] = []
        held: list[str] = []  # renewed from the first insert on, however many recipients follow
        retry: list[str] = []
        try:
            async with self._keep(org_id, held):
                openings = [
                    self._prepare(event, org_id, intent, recipient, channel)
                    for intent in intents
                    for recipient in await self._resolve(org_id, intent)
                    for channel in intent.channels
                ]
                # every delivery of the event recorded in one round trip, before the first is sent
                recorded = await self.repo.open_deliveries([o.doc for o in openings])
                for opening, (stored, created) in zip(openings, recorded, strict=True):
                    work, state = await self._take(org_id, opening, stored, created)
                    opened.append((work, state, opening.label))
                    if work is not None:
                        held.append(work.key)
                for work, state, label in opened:
                    if work is not None:
                        state = await self._settle(work)
                    self.observer.delivery(label.partition(":")[0], state.value)
                    if state in (DeliveryState.RETRYING, DeliveryState.SENDING):
                        retry.append(f"{label}:{state}")
        finally:
            self._busy.difference_update(held)
        if retry:
            raise RetryLater(f"deliveries not finished: {', '.join(retry)}")

    def _validated(self, event: InboundEvent) -> BaseModel:
        if isinstance(event.data, BaseModel):
            return event.data
        et = CATALOG.lookup(event.type)
        if et is None:
            raise InvalidEvent(f"unknown event type {event.type!r}")
        try:
            return et.model.model_validate(event.data)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            raise InvalidEvent(f"{event.type}: invalid or missing fields: {fields}") from exc

    @staticmethod
    def _org(event: InboundEvent, data: BaseModel) -> str:
        if isinstance(data, auth_events.VerificationRequested):
            return event.org_id or ""  # a registration not yet verified: no organisation exists yet
        inner = getattr(data, "org_id", None)
        if inner and event.org_id and inner != event.org_id:
            raise InvalidEvent("the envelope's org_id and the data's org_id differ")
        org = inner or event.org_id
        if not org:
            raise InvalidEvent("the event names no organisation")
        return str(org)

    async def _resolve(self, org_id: str, intent: Intent) -> list[Recipient]:
        target = intent.target
        if isinstance(target, AddressTarget):
            organization = str(intent.context.get("organization", "")) or await self.repo.organization_name(org_id)
            return [Recipient(org_id, None, target.email, target.name, organization, None)]
        if isinstance(target, UserTarget):
            doc = await self.repo.get_user(org_id, target.user_id)
            if doc is None or not doc.get("email"):
                raise RetryLater(f"user {target.user_id} of org {org_id} is not known (yet)")
            if doc.get("status") != "active":
                log.info("skipping notification to an inactive user", extra={"user_id": target.user_id})
                return []
            docs = [doc]
        else:
            assert isinstance(target, RoleTarget)
            docs = [d for d in await self.repo.users_with_roles(org_id, target.roles) if d.get("email")]
        # the organisation's name from another member only when a user's own document lacks it
        organization = await self.repo.organization_name(org_id) if any(not d.get("organization") for d in docs) else ""
        # a critical notification goes out whatever the preferences say (preferences.allows): not read for it
        prefs: dict[str, Doc] = {}
        if docs and not (intent.critical or intent.category in CRITICAL_CATEGORIES):
            prefs = await self.repo.preferences_of(org_id, [str(d["user_id"]) for d in docs])
        out = []
        for d in docs:
            stored = prefs.get(str(d["user_id"]))
            out.append(
                Recipient(
                    org_id,
                    str(d["user_id"]),
                    str(d["email"]),
                    str(d.get("name", "")),
                    str(d.get("organization") or organization),
                    stored.get("channels") if stored else None,
                )
            )
        return out

    def _context(self, intent: Intent, recipient: Recipient) -> dict[str, Any]:
        return {
            "recipient_name": recipient.name,
            "recipient_email": recipient.email,
            "organization": recipient.organization,
            "base_url": self.links.base_url.rstrip("/"),
            "critical": intent.critical,
            **intent.context,
        }

    def _payload(
        self, event: InboundEvent, intent: Intent, recipient: Recipient, channel: Channel, rendered: Rendered
    ) -> dict[str, Any]:
        """What the delivery is sent from (stored on the document until it is settled). Raises
        :class:`InvalidAddress` for an e-mail address no relay can be given."""
        if channel is Channel.IN_APP:
            assert recipient.user_id is not None
            nid = notice_key(event.id, recipient.user_id)
            link = intent.context.get("download_url") or intent.context.get("endpoint_link")
            return {
                "notice_id": nid,
                "user_id": recipient.user_id,
                "event_type": event.type,
                "category": intent.category.value,
                "title": rendered.subject,
                "body": rendered.in_app,
                "link": link if isinstance(link, str) else None,
                # newest first by when it happened (the event's time), not by when a handler got to it
                "sort_key": sort_key(event.time, nid),
            }
        address = normalize(recipient.email)
        return {
            "to_local": address.local,
            "to_domain": address.domain,
            "to_name": recipient.name,
            "subject": rendered.subject,
            "text": rendered.text,
            "html": rendered.html,
            "message_id": message_id(event.id, recipient.key, self.sender),
            "budget": intent.budget.name,
            "budget_org": intent.budget.org_id,
        }

    def _prepare(
        self, event: InboundEvent, org_id: str, intent: Intent, recipient: Recipient, channel: Channel
    ) -> Opening:
        """The delivery document of (event, recipient, channel), rendered (its payload), or with the outcome
        decided already (turned off in preferences, a template that fails, an unusable address)."""
        key = delivery_key(event.id, recipient.key, channel.value)
        decided: tuple[DeliveryState, str, ErrorClass | None] | None = None
        payload: dict[str, Any] | None = None
        if not allows(recipient.preferences, intent.category, channel, intent.critical):
            decided = (DeliveryState.SUPPRESSED, "turned off in preferences", None)
        else:
            try:
                rendered = self.renderer.render(intent.template, self._context(intent, recipient))
                payload = self._payload(event, intent, recipient, channel, rendered)
            except RenderError as exc:
                log.error("template failed to render", extra={"template": intent.template, "error": str(exc)})
                decided = (DeliveryState.FAILED, str(exc), ErrorClass.TEMPLATE_ERROR)
            except InvalidAddress as exc:
                decided = (DeliveryState.FAILED, f"not a usable e-mail address: {exc}", ErrorClass.INVALID_ADDRESS)
        doc = delivery_doc(
            key=key,
            org_id=org_id,
            event_id=event.id,
            event_type=event.type,
            template=intent.template,
            category=intent.category.value,
            critical=intent.critical,
            channel=channel.value,
            recipient=recipient.key,
            user_id=recipient.user_id,
            email=recipient.email,
            owner=self.owner,
            lease=self.lease_seconds,
            payload=payload,
        )
        return Opening(key, channel, event.id, f"{channel}:{recipient.key}", doc, payload, decided)

    async def _take(
        self, org_id: str, opening: Opening, stored: Doc, created: bool
    ) -> tuple[Work | None, DeliveryState]:
        """Take the lease of a recorded delivery (``created``: this handler inserted it, the lease is ours;
        else ``stored`` is the document found). Returns the work to settle, or ``None`` and the state when
        there is nothing to do here (settled, or another worker holds it)."""
        key, channel = opening.key, opening.channel
        if not created:
            state = DeliveryState(stored["state"])
            if state in SETTLED:
                self.observer.delivery(channel.value, "duplicate")
                return None, state
            if key in self._busy:  # another task of this worker (a take-over) is settling it
                return None, DeliveryState.SENDING
            self._busy.add(key)  # before the await: the take-over loop checks it too
            try:
                claimed = await self.repo.claim(org_id, key, self.lease_seconds, self.owner)
            except BaseException:
                self._busy.discard(key)
                raise
            if not claimed:
                self._busy.discard(key)
                return None, DeliveryState.SENDING  # another worker holds the lease: the event comes back later
        else:
            self._busy.add(key)
        decided = opening.decided
        if decided is not None:
            try:
                await self._finish(org_id, key, decided[0], decided[1], error_class=decided[2])
            finally:
                self._busy.discard(key)
            return None, decided[0]
        assert opening.payload is not None
        budget_taken = bool(stored.get("budget_taken")) if not created else False
        return Work(org_id, key, channel, opening.event_id, opening.payload, budget_taken), DeliveryState.SENDING

    @asynccontextmanager
    async def _keep(self, org_id: str, keys: Sequence[str]) -> AsyncIterator[None]:
        """Renew this worker's leases on ``keys`` (read again each round: the caller may add to it) every
        third of the lease until the block ends."""
        task = asyncio.create_task(self._renew(org_id, keys), name="notification-lease-renewal")
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _renew(self, org_id: str, keys: Sequence[str]) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            if not keys:
                continue
            try:
                await self.repo.renew(org_id, list(keys), self.lease_seconds, self.owner)
            except Exception as exc:  # logged; the next round tries again, the lease bound still holds
                log.warning("could not renew delivery leases", extra={"error": repr(exc), "deliveries": len(keys)})

    async def _settle(self, work: Work) -> DeliveryState:
        """Send one held delivery and record the outcome. Never leaves it held: a database failure releases
        it (``retrying``, the error re-raised for the bus to retry the event); anything else unexpected fails
        it with the error as reason, and the worker goes on with the next."""
        try:
            if work.channel is Channel.IN_APP:
                return await self._store_notice(work)
            return await self._send_mail(work)
        except (PyMongoError, OSError):
            with suppress(Exception):
                await self.repo.finish(work.org_id, work.key, DeliveryState.RETRYING, "database unavailable")
            raise
        except Exception as exc:
            log.exception("delivery failed unexpectedly", extra={"delivery": work.key})
            reason = f"internal error: {exc!r}"[:500]
            await self._finish(
                work.org_id, work.key, DeliveryState.FAILED, reason, error_class=ErrorClass.INTERNAL_ERROR
            )
            return DeliveryState.FAILED

    async def _send_mail(self, work: Work) -> DeliveryState:
        p = work.payload
        address = Address(str(p["to_local"]), str(p["to_domain"]))
        budget = Budget(str(p.get("budget") or "general"), p.get("budget_org"))
        if not work.budget_taken and not await self.limiter(address.addr_spec.lower(), budget):
            reason = f"recipient rate limit ({budget.name.partition(':')[0]})"
            await self._finish(work.org_id, work.key, DeliveryState.SUPPRESSED, reason)
            log.warning("e-mail suppressed by the per-recipient rate limit", extra={"delivery": work.key})
            return DeliveryState.SUPPRESSED
        await self.repo.start_sending(work.org_id, work.key, self.owner)
        try:
            message = build_message(
                sender=self.sender,
                to=address,
                to_name=str(p.get("to_name") or ""),
                rendered=Rendered(str(p["subject"]), str(p["text"]), str(p["html"]), ""),
                msg_id=str(p["message_id"]),
                event_id=work.event_id,
            )
        except (ValueError, TypeError, LookupError) as exc:
            reason = f"cannot build the message: {exc}"
            await self._finish(
                work.org_id, work.key, DeliveryState.FAILED, reason, error_class=ErrorClass.MESSAGE_ERROR
            )
            return DeliveryState.FAILED

        async def record(attempt: Attempt) -> None:
            self.observer.attempt(attempt.relay, attempt.outcome)
            await self.repo.add_attempt(work.org_id, work.key, attempt)

        result = await self.mailer.send(message, record)
        last = result.last
        if result.outcome == "sent":
            await self._finish(work.org_id, work.key, DeliveryState.SENT)
            return DeliveryState.SENT
        reason = f"{last.code or ''} {last.response}".strip() if last else ""
        if result.outcome == "permanent":
            # a permanent outcome without a code: the relay cannot carry this message (SMTPUTF8)
            code = last.code if last else None
            cls = ErrorClass.REJECTED if code else ErrorClass.MESSAGE_ERROR
            await self._finish(work.org_id, work.key, DeliveryState.FAILED, reason, error_class=cls, smtp_code=code)
            log.warning("e-mail refused permanently", extra={"delivery": work.key, "smtp_code": last and last.code})
            return DeliveryState.FAILED
        await self._finish(work.org_id, work.key, DeliveryState.RETRYING, reason)
        return DeliveryState.RETRYING

    async def _store_notice(self, work: Work) -> DeliveryState:
        p = work.payload
        nid = str(p["notice_id"])
        await self.repo.add_notice(
            notice_id=nid,
            org_id=work.org_id,
            user_id=str(p["user_id"]),
            event_id=work.event_id,
            event_type=str(p["event_type"]),
            category=str(p["category"]),
            title=str(p["title"]),
            body=str(p["body"]),
            link=p.get("link"),
            sort_key=str(p["sort_key"]),
        )
        await self.repo.add_attempt(
            work.org_id, work.key, Attempt(utcnow(), "in-app", "sent", None, f"stored notification {nid}")
        )
        await self._finish(work.org_id, work.key, DeliveryState.SENT)
        return DeliveryState.SENT

    async def _finish(
        self,
        org_id: str,
        key: str,
        state: DeliveryState,
        reason: str = "",
        *,
        error_class: ErrorClass | None = None,
        smtp_code: int | None = None,
    ) -> None:
        """Settle or release a delivery. When this write ends it (``sent``, ``failed``), its outcome event
        (:func:`~.outcomes.outcome_of`) goes into the outbox in the same transaction (a replica set; on a
        standalone server the two writes follow each other). Only the write that settles the delivery adds
        the event, and its id is derived from the delivery and the outcome: a redone write publishes
        nothing new, and a copy carries the same id."""
        if self.outbox is None or state not in (DeliveryState.SENT, DeliveryState.FAILED):
            await self.repo.finish(org_id, key, state, reason)
            return
        async with self.outbox.transaction() as session:
            doc = await self.repo.finish(org_id, key, state, reason, session=session)
            outcome = outcome_of(doc, state, error_class, smtp_code) if doc is not None else None
            if outcome is not None:
                await self.outbox.add(
                    outcome.type,
                    outcome.data,
                    org_id=org_id,
                    subject=outcome.subject,
                    session=session,
                    event_id=outcome.event_id,
                )

    # ---- deliveries whose holder died ----------------------------------------------------------------

    async def take_over_once(self) -> int:
        """Take over and settle the deliveries whose holder died (lease run out); returns how many this
        worker took. Safe to run in every worker at once: each delivery is claimed by one of them."""
        orphans = await self.repo.orphans(SWEEP_BATCH)
        gate = asyncio.Semaphore(SWEEP_CONCURRENCY)
        taken = 0

        async def one(doc: Doc) -> None:
            nonlocal taken
            org_id, key = str(doc["org_id"]), str(doc["_id"])
            async with gate:
                if key in self._busy:  # a handler of this worker is settling it (its event came back)
                    return
                self._busy.add(key)
                try:
                    if not await self.repo.claim(org_id, key, self.lease_seconds, self.owner):
                        return
                    taken += 1
                    channel = Channel(doc["channel"])
                    work = Work(
                        org_id, key, channel, str(doc["event_id"]), doc["payload"], bool(doc.get("budget_taken"))
                    )
                    log.info("taking over a delivery whose worker died", extra={"delivery": key})
                    async with self._keep(org_id, [key]):
                        state = await self._settle(work)
                    self.observer.delivery(channel.value, state.value)
                finally:
                    self._busy.discard(key)

        await asyncio.gather(*(one(d) for d in orphans))
        return taken
