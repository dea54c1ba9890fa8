"""What the API does, without HTTP: endpoints and their secrets, accepting application events, listing and
resending messages.

Every operation takes the caller's organisation and only ever touches that organisation's documents.
Errors are the domain errors of :mod:`.errors` (``api.PROBLEMS`` says how each is answered).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from novapulse_runtime import jsonstrict
from novapulse_runtime.catalog import CATALOG
from novapulse_runtime.clock import as_datetime, from_ms, stamp, to_ms, utcnow
from novapulse_runtime.documents import Doc
from novapulse_runtime.paging import PageQuery, page
from novapulse_runtime.secretbox import SecretBox

from .constants import EVENT_ID_PREFIX, EVENT_TEST, MessageStatus
from .domain import new_id, redact
from .errors import (
    DataNotJson,
    EndpointNotEnabled,
    EndpointNotFound,
    IdempotencyKeyReused,
    MessageInFlight,
    MessageNotFound,
    NullField,
    PayloadTooLarge,
    PlatformEventType,
    TooManyEndpoints,
    UrlNotAllowed,
)
from .fanout import payload_body, subscribed
from .models import (
    AttemptList,
    AttemptOut,
    EndpointIn,
    EndpointList,
    EndpointOut,
    EndpointPatch,
    EventIn,
    MessageList,
    MessageOut,
    MessageQuery,
    ResendOut,
    RotateIn,
    SecretOut,
    SecretPrevious,
)
from .repository import Repository, endpoint_doc, expiring, message_doc, secret_entry
from .settings import WebhookSettings
from .signing import generate_secret
from .ssrf import AddressPolicy, SsrfError, check_url, resolve
from .versions import EndpointVersions


def endpoint_out(doc: Doc, *, reveal_headers: bool = True) -> EndpointOut:
    """The endpoint as the API shows it; ``reveal_headers=False`` (callers who cannot change the endpoint)
    masks custom header values that look like credentials."""
    headers = doc.get("headers", {})
    return EndpointOut(
        id=doc["_id"],
        url=doc["url"],
        description=doc.get("description", ""),
        event_types=doc.get("event_types", []),
        enabled=doc.get("enabled", True),
        headers=headers if reveal_headers else redact(headers),
        rate_limit=doc.get("rate_limit"),
        concurrency=doc.get("concurrency", 1),
        disabled_reason=doc.get("disabled_reason"),
        failing_since=as_datetime(doc.get("failing_since")),
        created_at=stamp(doc["created_at"]),
        updated_at=stamp(doc["updated_at"]),
    )


def message_out(doc: Doc, with_payload: bool = False) -> MessageOut:
    """The message as the API shows it; ``with_payload`` adds the stored payload (``None`` when it is not
    strict JSON, RFC 8259). ``next_attempt_at`` (stored in epoch ms) is shown only while it is pending."""
    payload = None
    if with_payload and "body" in doc:
        try:
            payload = jsonstrict.loads(doc["body"])  # written by jsonstrict.dumps since payloads are strict
        except jsonstrict.InvalidJSON:
            payload = None  # a body stored before that, holding NaN/Infinity: not shown (and never sent)
    return MessageOut(
        id=doc["_id"],
        endpoint_id=doc["endpoint_id"],
        event_id=doc["event_id"],
        event_type=doc["event_type"],
        status=doc["status"],
        attempts=doc.get("attempts", 0),
        next_attempt_at=from_ms(doc["next_attempt_at"])
        if doc["status"] == MessageStatus.PENDING and isinstance(doc.get("next_attempt_at"), int | float)
        else None,
        last_status=doc.get("last_status"),
        last_error=doc.get("last_error"),
        created_at=stamp(doc["created_at"]),
        updated_at=stamp(doc["updated_at"]),
        payload=payload,
    )


def attempt_out(doc: Doc) -> AttemptOut:
    """One attempt of the attempt log as the API shows it (``duration_ms`` in milliseconds)."""
    return AttemptOut(
        id=doc["_id"],
        message_id=doc["message_id"],
        endpoint_id=doc["endpoint_id"],
        attempt=doc["attempt"],
        started_at=stamp(doc["started_at"]),
        url=doc.get("url", ""),
        request_headers=doc.get("request_headers") or {},
        status=doc.get("status"),
        response_body=doc.get("response_body"),
        duration_ms=doc.get("duration_ms"),
        error=doc.get("error"),
        outcome=doc["outcome"],
    )


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def request_fingerprint(event_type: str, data: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the request an idempotency key is bound to: ``{"type", "data"}`` as strict JSON with
    object keys sorted, so the same request always has the same fingerprint whatever its key order."""
    text = jsonstrict.dumps(_canonical({"type": event_type, "data": dict(data)}))
    return hashlib.sha256(text.encode()).hexdigest()


class WebhookService:
    """Application operations behind the routes.

    :param repo: the service's storage.
    :param box: encryption of endpoint secrets at rest.
    :param versions: the per-organisation endpoint versions the workers' caches follow (``None``: no
        read-your-writes, caches live ``ENDPOINT_CACHE_TTL`` seconds).
    """

    def __init__(
        self, repo: Repository, settings: WebhookSettings, box: SecretBox, versions: EndpointVersions | None = None
    ) -> None:
        self.repo = repo
        self.versions = versions
        self.settings = settings
        self.box = box
        self.policy = AddressPolicy(settings.webhook_allowed_cidrs, settings.webhook_allow_http)

    async def check_target(self, url: str) -> None:
        """Check that ``url`` may be an endpoint: allowed by the address policy, and its host resolves only
        to allowed addresses (waiting up to ``WEBHOOK_DNS_TIMEOUT`` seconds). A name that does not resolve
        today is accepted (the send-time check still applies).

        :raises UrlNotAllowed: the URL or one of its addresses is refused.
        """
        try:
            host, port = check_url(url, self.policy)
            await resolve(host, port, self.policy, self.settings.webhook_dns_timeout)
        except SsrfError as exc:
            if str(exc).startswith("cannot resolve"):
                return
            raise UrlNotAllowed(str(exc)) from exc

    async def changed(self, org_id: str) -> None:
        """After every write to the organisation's endpoints, before answering: the workers' caches must
        follow it (read-your-writes, see versions.py)."""
        if self.versions is not None:
            await self.versions.bump(org_id)

    # --- endpoints -------------------------------------------------------------------------------------

    async def create_endpoint(self, org_id: str, body: EndpointIn) -> EndpointOut:
        """Register an endpoint; its signing secret is ``body.secret`` or a new ``whsec_`` secret.

        :raises UrlNotAllowed: the URL is refused by the address policy.
        :raises TooManyEndpoints: the organisation has ``WEBHOOK_MAX_ENDPOINTS_PER_ORG`` already.
        """
        await self.check_target(body.url)
        if await self.repo.count_endpoints(org_id) >= self.settings.webhook_max_endpoints_per_org:
            raise TooManyEndpoints(self.settings.webhook_max_endpoints_per_org)
        doc = endpoint_doc(
            org_id=org_id,
            url=body.url,
            description=body.description,
            event_types=body.event_types,
            enabled=body.enabled,
            headers=body.headers,
            rate_limit=body.rate_limit,
            concurrency=body.concurrency or self.settings.webhook_default_concurrency,
            encrypted_secret=self.box.encrypt(body.secret or generate_secret()),
            now=utcnow(),
        )
        await self.repo.insert_endpoint(doc)
        await self.changed(org_id)
        return endpoint_out(doc)

    async def list_endpoints(self, org_id: str, query: PageQuery, *, reveal_headers: bool) -> EndpointList:
        """One page of the organisation's endpoints, newest first (cursor paging, one rule:
        :mod:`novapulse_runtime.paging`); ``reveal_headers`` as in :func:`endpoint_out`."""
        docs = await self.repo.list_endpoints(org_id, query.fetch, query.after)
        shown, cursor = page(docs, query.limit, lambda d: str(d["_id"]))
        return EndpointList(items=[endpoint_out(d, reveal_headers=reveal_headers) for d in shown], next_cursor=cursor)

    async def endpoint(self, org_id: str, endpoint_id: str) -> Doc:
        """The stored endpoint.

        :raises EndpointNotFound: no such endpoint in the organisation.
        """
        doc = await self.repo.get_endpoint(org_id, endpoint_id)
        if doc is None:
            raise EndpointNotFound
        return doc

    async def get_endpoint(self, org_id: str, endpoint_id: str, *, reveal_headers: bool) -> EndpointOut:
        """The endpoint as the API shows it (see :func:`endpoint_out`).

        :raises EndpointNotFound: no such endpoint in the organisation.
        """
        return endpoint_out(await self.endpoint(org_id, endpoint_id), reveal_headers=reveal_headers)

    async def update_endpoint(self, org_id: str, endpoint_id: str, body: EndpointPatch) -> EndpointOut:
        """Change the fields ``body`` sets; enabling an endpoint clears its failure state.

        :raises NullField: a field that cannot be null is set to ``null``.
        :raises UrlNotAllowed: the new URL is refused by the address policy.
        :raises EndpointNotFound: no such endpoint in the organisation.
        """
        changes = body.model_dump(exclude_unset=True)
        for field in ("url", "description", "event_types", "enabled", "headers", "concurrency"):
            if field in changes and changes[field] is None:
                raise NullField(field)
        if "url" in changes:
            await self.check_target(changes["url"])
        unset: list[str] = []
        if changes.get("enabled") is True:
            changes["disabled_reason"] = None
            changes["failing_since"] = None
        changes["updated_at"] = utcnow()
        doc = await self.repo.update_endpoint(org_id, endpoint_id, changes, unset)
        if doc is None:
            raise EndpointNotFound
        await self.changed(org_id)
        return endpoint_out(doc)

    async def delete_endpoint(self, org_id: str, endpoint_id: str) -> None:
        """Delete the endpoint (the workers fail its pending messages).

        :raises EndpointNotFound: no such endpoint in the organisation.
        """
        if not await self.repo.delete_endpoint(org_id, endpoint_id):
            raise EndpointNotFound
        await self.changed(org_id)

    async def secret(self, org_id: str, endpoint_id: str) -> SecretOut:
        """The secret that signs now, and rotated ones still in their grace period.

        :raises EndpointNotFound: no such endpoint in the organisation.
        """
        doc = await self.endpoint(org_id, endpoint_id)
        now = utcnow()
        current = self.box.decrypt_text(doc["secrets"][0]["value"])
        previous = []
        for s in doc["secrets"][1:]:
            expires = as_datetime(s.get("expires_at"))
            if expires is not None and expires > now:
                previous.append(SecretPrevious(secret=self.box.decrypt_text(s["value"]), expires_at=expires))
        return SecretOut(secret=current, previous=previous)

    async def rotate_secret(self, org_id: str, endpoint_id: str, body: RotateIn) -> SecretOut:
        """Sign with a new secret from now on; the secrets that signed until now keep signing alongside for
        ``body.grace_seconds`` (default ``WEBHOOK_ROTATION_GRACE``) seconds, at most four of them (Standard
        Webhooks: several space-separated signatures during a rotation).

        :raises EndpointNotFound: no such endpoint in the organisation.
        """
        doc = await self.endpoint(org_id, endpoint_id)
        now = utcnow()
        grace = self.settings.webhook_rotation_grace if body.grace_seconds is None else body.grace_seconds
        expires = now + timedelta(seconds=grace)
        kept = []
        for s in doc["secrets"]:
            was = as_datetime(s.get("expires_at"))
            if was is None or was > now:
                kept.append(expiring(s, to_ms(min(was, expires) if was else expires)))
        if grace <= 0:
            kept = []
        new = secret_entry(self.box.encrypt(body.secret or generate_secret()), now)
        secrets = [new, *kept[:4]]  # the current secret plus at most four still in their grace period
        updated = await self.repo.update_endpoint(org_id, endpoint_id, {"secrets": secrets, "updated_at": now})
        if updated is None:
            raise EndpointNotFound
        await self.changed(org_id)
        return await self.secret(org_id, endpoint_id)

    # --- events and messages ---------------------------------------------------------------------------

    async def accept_event(self, org_id: str, body: EventIn, *, check_catalogue: bool = True) -> tuple[str, int, bool]:
        """Store an application event and one message per subscribed endpoint; (event id, messages, duplicate).

        Idempotency (draft-ietf-httpapi-idempotency-key-header, §2 "The Idempotency-Key HTTP Request Header
        Field"): an ``idempotency_key`` is bound to a SHA-256 fingerprint of the request (``type`` and
        ``data``, keys sorted). The same key with the same request answers what the first request answered
        (same event id and message count, ``duplicate`` true) and sends nothing again; the same key with a
        different request is refused with 422, as the draft says (§2.7), instead of being dropped silently.

        :raises DataNotJson: ``data`` is not strict JSON.
        :raises PayloadTooLarge: ``data`` is over ``WEBHOOK_MAX_PAYLOAD_BYTES`` bytes as JSON.
        :raises PlatformEventType: ``type`` is in the platform catalogue (with ``check_catalogue``).
        :raises IdempotencyKeyReused: the key was used before with a different request.
        """
        try:
            raw = jsonstrict.dumps(body.data)
        except jsonstrict.InvalidJSON as exc:
            raise DataNotJson(str(exc)) from exc
        if len(raw.encode()) > self.settings.webhook_max_payload_bytes:
            raise PayloadTooLarge(self.settings.webhook_max_payload_bytes)
        if check_catalogue:
            known = CATALOG.lookup(body.type)
            if known is not None:
                raise PlatformEventType(body.type)
        fingerprint = request_fingerprint(body.type, body.data)
        if body.idempotency_key:
            digest = hashlib.sha256(f"{org_id}\x00{body.idempotency_key}".encode()).hexdigest()[:32]
            event_id = f"{EVENT_ID_PREFIX}_k{digest}"
        else:
            event_id = new_id(EVENT_ID_PREFIX)
        now = utcnow()
        fresh = await self.repo.insert_event(
            event_id=event_id, org_id=org_id, event_type=body.type, request_hash=fingerprint, now=now
        )
        if not fresh:
            existing = await self.repo.get_event(org_id, event_id)
            if existing is not None and existing.get("request_hash", fingerprint) != fingerprint:
                raise IdempotencyKeyReused
            if existing is None or "messages" in existing:
                return event_id, int((existing or {}).get("messages", 0)), True
            # The first request stored the event but stopped before recording its fan-out (a crash, a database
            # error): finish it now. Messages are unique per (event, endpoint), so a concurrent first request
            # and this one cannot both create a message for one endpoint.
            await self.fan_out(org_id, event_id, body.type, body.data, now)
            count = await self.repo.count_event_messages(org_id, event_id)
            await self.repo.set_event_messages(org_id, event_id, count)
            return event_id, count, True
        count = await self.fan_out(org_id, event_id, body.type, body.data, now)
        await self.repo.set_event_messages(org_id, event_id, count)
        return event_id, count, False

    async def fan_out(
        self,
        org_id: str,
        event_id: str,
        event_type: str,
        data: Mapping[str, Any],
        now: datetime,
        endpoints: list[Doc] | None = None,
    ) -> int:
        """Store a message due now for every subscribed endpoint (or every one of ``endpoints``); the workers
        claim them. Returns how many were stored (an (event, endpoint) pair already stored is skipped).

        :raises novapulse_runtime.jsonstrict.InvalidJSON: ``data`` is not strict JSON.
        """
        targets = endpoints if endpoints is not None else subscribed(await self.repo.org_endpoints(org_id), event_type)
        body = payload_body(event_type, data, now)
        docs = [
            message_doc(
                org_id=org_id, endpoint_id=e["_id"], event_id=event_id, event_type=event_type, body=body, now=now
            )
            for e in targets
        ]
        return len(await self.repo.insert_messages(docs))

    async def send_test(self, org_id: str, endpoint_id: str) -> str:
        """Queue a ``webhook.test`` message for the endpoint; returns its id.

        :raises EndpointNotFound: no such endpoint in the organisation.
        :raises EndpointNotEnabled: the endpoint is disabled.
        """
        doc = await self.endpoint(org_id, endpoint_id)
        if not doc.get("enabled"):
            raise EndpointNotEnabled
        now = utcnow()
        event_id = new_id(EVENT_ID_PREFIX)
        data = {"endpoint_id": endpoint_id, "message": "This is a test event from NovaPulse"}
        body = payload_body(EVENT_TEST, data, now)
        msg = message_doc(
            org_id=org_id, endpoint_id=endpoint_id, event_id=event_id, event_type=EVENT_TEST, body=body, now=now
        )
        await self.repo.insert_messages([msg])
        return str(msg["_id"])

    async def message(self, org_id: str, message_id: str) -> Doc:
        """The stored message.

        :raises MessageNotFound: no such message in the organisation.
        """
        doc = await self.repo.get_message(org_id, message_id)
        if doc is None:
            raise MessageNotFound
        return doc

    async def get_message(self, org_id: str, message_id: str) -> MessageOut:
        """The message with its payload.

        :raises MessageNotFound: no such message in the organisation.
        """
        return message_out(await self.message(org_id, message_id), with_payload=True)

    async def list_messages(self, org_id: str, query: MessageQuery) -> MessageList:
        """One page of the organisation's messages, newest first, filtered by ``query`` (endpoint, status,
        event type, last attempt's HTTP status, creation time from ``since`` to ``until`` inclusive; cursor paging,
        :mod:`novapulse_runtime.paging`)."""
        docs = await self.repo.list_messages(
            org_id,
            query.fetch,
            query.after,
            endpoint_id=query.endpoint_id,
            status=str(query.status) if query.status else None,
            event_type=query.event_type,
            http_status=query.http_status,
            since=query.since,
            until=query.until,
        )
        shown, cursor = page(docs, query.limit, lambda d: str(d["_id"]))
        return MessageList(items=[message_out(d) for d in shown], next_cursor=cursor)

    async def list_attempts(self, org_id: str, message_id: str) -> AttemptList:
        """Every attempt of the message, oldest first.

        :raises MessageNotFound: no such message in the organisation.
        """
        await self.message(org_id, message_id)
        return AttemptList(items=[attempt_out(d) for d in await self.repo.list_attempts(org_id, message_id)])

    async def resend(self, org_id: str, message_id: str) -> ResendOut:
        """Make a finished message due now with a fresh retry schedule (same ``webhook-id``); returns its id
        and new status.

        :raises MessageNotFound: no such message in the organisation.
        :raises MessageInFlight: the message is still pending or being delivered.
        """
        doc, changed = await self.repo.requeue_message(org_id, message_id, utcnow())
        if doc is None:
            raise MessageNotFound
        if not changed:
            raise MessageInFlight
        return ResendOut(id=doc["_id"], status=doc["status"])

    async def recover(
        self, org_id: str, endpoint_id: str, since: datetime, until: datetime | None, *, dry_run: bool = False
    ) -> int:
        """Resend every failed message of the endpoint created from ``since`` to ``until`` (naive times are
        UTC); returns how many were requeued (``dry_run``: how many are failed now, nothing changes).
        Idempotent: a requeued message is no longer failed, so a second call finds only new failures.

        :raises EndpointNotFound: no such endpoint in the organisation.
        """
        await self.endpoint(org_id, endpoint_id)
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        if until is not None and until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        found = await self.repo.failed_message_ids(org_id, endpoint_id, since, until)
        if dry_run:
            return len(found)
        return await self.repo.requeue_many(org_id, found, utcnow())
