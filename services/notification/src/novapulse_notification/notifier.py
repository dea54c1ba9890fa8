"""The service layer of the worker: one event in, projection updated, notifications delivered.

Exactly-once in effect per (event, recipient, channel):

1. a delivery document keyed by (event id, recipient, channel) is inserted *before* anything is sent (a
   redelivered event finds it and does not create a second one);
2. a worker takes a lease on it (state ``sending``) — a second worker handling the same event at the same
   time cannot take it and retries later;
3. the mail is handed to SMTP; then the document is marked ``sent`` (or ``failed`` / ``retrying``).

A worker killed between the relay accepting the mail (step 3) and the ``sent`` mark leaves the document
``sending``; when the event is redelivered and the lease has run out the mail is sent again, with the same
``Message-ID``. So: never a loss, and at most one duplicate per such crash.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from novapulse_runtime import catalog

from .constants import Channel, DeliveryState
from .mailer import Attempt, Mailer, build_message, message_id
from .planning import AddressTarget, Intent, InvalidEvent, RoleTarget, UserTarget, plan, project
from .preferences import allows
from .rendering import Renderer, RenderError
from .repository import Repository, delivery_key, notice_key, now_utc, sort_key

log = logging.getLogger(__name__)

_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"\\]{1,64}@[^@\s<>()\[\],;:\"\\]{1,253}")

RecipientLimiter = Callable[[str], Awaitable[bool]]
"""``await limiter(recipient)`` is ``True`` when one more e-mail to that recipient is allowed now."""


class Observer(Protocol):
    """Where the notifier reports outcomes (metrics in production, nothing in unit tests)."""

    def delivery(self, channel: str, outcome: str) -> None: ...
    def attempt(self, relay: str, outcome: str) -> None: ...


class NullObserver:
    def delivery(self, channel: str, outcome: str) -> None:
        return None

    def attempt(self, relay: str, outcome: str) -> None:
        return None


class InboundEvent(Protocol):
    """What the worker needs of a bus event."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def org_id(self) -> str | None: ...
    @property
    def data(self) -> Any: ...
    @property
    def time(self) -> datetime: ...


class RetryLater(Exception):
    """Something may succeed later (relay down, recipient not yet projected, another worker sending):
    the bus redelivers the event with backoff, then dead-letters it after its delivery cap."""


@dataclass(frozen=True)
class Recipient:
    org_id: str
    user_id: str | None
    email: str
    name: str
    organization: str
    preferences: Mapping[str, Mapping[str, bool]] | None

    @property
    def key(self) -> str:
        return self.user_id or self.email


@dataclass(frozen=True)
class Links:
    base_url: str
    accept_path: str


def _event_ms(event: InboundEvent) -> int:
    """The event's time (epoch ms) orders projection updates; events without one count as now."""
    moment = getattr(event, "time", None)
    if isinstance(moment, datetime):
        return int(moment.timestamp() * 1000)
    return int(datetime.now(UTC).timestamp() * 1000)


async def allow_all(_recipient: str) -> bool:
    return True


class Notifier:
    """Handles one event: updates the projection, plans, resolves recipients, delivers on each channel."""

    def __init__(
        self,
        repo: Repository,
        renderer: Renderer,
        mailer: Mailer,
        *,
        sender: str,
        links: Links,
        lease_seconds: float = 60.0,
        limiter: RecipientLimiter = allow_all,
        observer: Observer | None = None,
    ) -> None:
        self.repo = repo
        self.renderer = renderer
        self.mailer = mailer
        self.sender = sender
        self.links = links
        self.lease_seconds = lease_seconds
        self.limiter = limiter
        self.observer: Observer = observer or NullObserver()

    async def handle(self, event: InboundEvent) -> None:
        """Process ``event``. Raises :class:`InvalidEvent` (never retry) or :class:`RetryLater`."""
        data = self._validated(event)
        org_id = self._org(event, data)
        change = project(event.type, data)
        if change is not None:
            await self.repo.apply_user_change(change.org_id, change.user_id, change.fields, _event_ms(event))
        intents = plan(event.type, data, base_url=self.links.base_url, accept_path=self.links.accept_path)
        retry: list[str] = []
        for intent in intents:
            for recipient in await self._resolve(org_id, intent):
                for channel in intent.channels:
                    state = await self._deliver(event, org_id, intent, recipient, channel)
                    self.observer.delivery(channel.value, state.value)
                    if state in (DeliveryState.RETRYING, DeliveryState.SENDING):
                        retry.append(f"{channel}:{recipient.key}:{state}")
        if retry:
            raise RetryLater(f"deliveries not finished: {', '.join(retry)}")

    def _validated(self, event: InboundEvent) -> BaseModel:
        if isinstance(event.data, BaseModel):
            return event.data
        et = catalog.lookup(event.type)
        if et is None:
            raise InvalidEvent(f"unknown event type {event.type!r}")
        try:
            return et.model.model_validate(event.data)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            raise InvalidEvent(f"{event.type}: invalid or missing fields: {fields}") from exc

    @staticmethod
    def _org(event: InboundEvent, data: BaseModel) -> str:
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
        organization = await self.repo.organization_name(org_id) if docs else ""
        out = []
        for d in docs:
            prefs = await self.repo.get_preferences(org_id, str(d["user_id"]))
            out.append(
                Recipient(
                    org_id,
                    str(d["user_id"]),
                    str(d["email"]),
                    str(d.get("name", "")),
                    str(d.get("organization") or organization),
                    prefs.get("channels") if prefs else None,
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

    async def _deliver(
        self, event: InboundEvent, org_id: str, intent: Intent, recipient: Recipient, channel: Channel
    ) -> DeliveryState:
        key = delivery_key(event.id, recipient.key, channel.value)
        created = now_utc()
        doc = await self.repo.open_delivery(
            {
                "_id": key,
                "org_id": org_id,
                "event_id": event.id,
                "event_type": event.type,
                "template": intent.template,
                "category": intent.category.value,
                "critical": intent.critical,
                "channel": channel.value,
                "recipient": recipient.key,
                "user_id": recipient.user_id,
                "email": recipient.email,
                "state": DeliveryState.PENDING.value,
                "attempt_count": 0,
                "created_at": created,
                "sort_key": sort_key(created, key),
                "lease_until_ms": 0,
            }
        )
        state = DeliveryState(doc["state"])
        if state in (DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.SUPPRESSED):
            self.observer.delivery(channel.value, "duplicate")
            return state
        if not allows(recipient.preferences, intent.category, channel, intent.critical):
            await self.repo.finish(org_id, key, DeliveryState.SUPPRESSED, "turned off in preferences")
            return DeliveryState.SUPPRESSED
        try:
            rendered = self.renderer.render(intent.template, self._context(intent, recipient))
        except RenderError as exc:
            await self.repo.finish(org_id, key, DeliveryState.FAILED, str(exc))
            raise InvalidEvent(str(exc)) from exc
        if channel is Channel.EMAIL and not _ADDRESS.fullmatch(recipient.email):
            await self.repo.finish(org_id, key, DeliveryState.FAILED, "not a usable e-mail address")
            return DeliveryState.FAILED
        if channel is Channel.IN_APP:
            return await self._store_notice(event, org_id, key, intent, recipient, rendered.in_app, rendered.subject)
        if not await self.repo.claim(org_id, key, self.lease_seconds):
            return DeliveryState.SENDING  # another worker holds the lease: the event comes back later
        if not await self.limiter(recipient.email):
            await self.repo.finish(org_id, key, DeliveryState.SUPPRESSED, "recipient rate limit")
            log.warning("e-mail suppressed by the per-recipient rate limit", extra={"delivery": key})
            return DeliveryState.SUPPRESSED
        message = build_message(
            sender=self.sender,
            to_email=recipient.email,
            to_name=recipient.name,
            rendered=rendered,
            msg_id=message_id(event.id, recipient.key, self.sender),
            event_id=event.id,
        )

        async def record(attempt: Attempt) -> None:
            self.observer.attempt(attempt.relay, attempt.outcome)
            await self.repo.add_attempt(org_id, key, attempt)

        result = await self.mailer.send(message, record)
        last = result.last
        if result.outcome == "sent":
            await self.repo.finish(org_id, key, DeliveryState.SENT)
            return DeliveryState.SENT
        reason = f"{last.code or ''} {last.response}".strip() if last else ""
        if result.outcome == "permanent":
            await self.repo.finish(org_id, key, DeliveryState.FAILED, reason)
            log.warning("e-mail refused permanently", extra={"delivery": key, "smtp_code": last and last.code})
            return DeliveryState.FAILED
        await self.repo.finish(org_id, key, DeliveryState.RETRYING, reason)
        return DeliveryState.RETRYING

    async def _store_notice(
        self,
        event: InboundEvent,
        org_id: str,
        key: str,
        intent: Intent,
        recipient: Recipient,
        body: str,
        title: str,
    ) -> DeliveryState:
        assert recipient.user_id is not None
        created = now_utc()
        nid = notice_key(event.id, recipient.user_id)
        link = intent.context.get("download_url") or intent.context.get("endpoint_link")
        await self.repo.add_notice(
            {
                "_id": nid,
                "org_id": org_id,
                "user_id": recipient.user_id,
                "event_id": event.id,
                "event_type": event.type,
                "category": intent.category.value,
                "title": title,
                "body": body,
                "link": link if isinstance(link, str) else None,
                "created_at": created,
                "read": False,
                # newest first by when it happened (the event's time), not by
                # when a concurrent handler got to it
                "sort_key": sort_key(event.time, nid),
            }
        )
        await self.repo.add_attempt(
            org_id, key, Attempt(datetime.now(UTC), "in-app", "sent", None, f"stored notification {nid}")
        )
        await self.repo.finish(org_id, key, DeliveryState.SENT)
        return DeliveryState.SENT
