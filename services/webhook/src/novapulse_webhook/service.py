"""What the API does, without HTTP: endpoints and their secrets, accepting application events, resending.

Every operation takes the caller's organisation and only ever touches that organisation's documents.
Errors are :class:`~novapulse_runtime.problems.ProblemError` with a 4xx status.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from novapulse_runtime import jsonstrict
from novapulse_runtime.catalog import CATALOG
from novapulse_runtime.problems import ProblemError

from .clock import as_datetime, from_ms, stamp, to_ms, utcnow
from .constants import ENDPOINT_ID_PREFIX, EVENT_ID_PREFIX, EVENT_TEST, MessageStatus
from .domain import new_id, redact
from .fanout import new_message, payload_body, subscribed
from .models import (
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    EventIn,
    MessageOut,
    RotateIn,
    SecretOut,
    SecretPrevious,
)
from .repository import Doc, Repository
from .secretbox import SecretBox, generate_secret
from .settings import WebhookSettings
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
    """Application operations behind the routes."""

    def __init__(
        self, repo: Repository, settings: WebhookSettings, box: SecretBox, versions: EndpointVersions | None = None
    ) -> None:
        self.repo = repo
        self.versions = versions
        self.settings = settings
        self.box = box
        self.policy = AddressPolicy(settings.webhook_allowed_cidrs, settings.webhook_allow_http)

    async def check_target(self, url: str) -> None:
        """422 with a field error on ``url`` unless it is allowed and its host resolves only to allowed
        addresses. A name that does not resolve today is accepted (the send-time check still applies)."""
        try:
            host, port = check_url(url, self.policy)
            await resolve(host, port, self.policy, self.settings.webhook_dns_timeout)
        except SsrfError as exc:
            if str(exc).startswith("cannot resolve"):
                return
            raise ProblemError(
                422,
                f"The endpoint URL is not allowed: {exc}",
                errors=[{"location": "body", "field": "url", "message": str(exc), "type": "url_not_allowed"}],
            ) from exc

    async def changed(self, org_id: str) -> None:
        """After every write to the organisation's endpoints, before answering: the workers' caches must
        follow it (read-your-writes, see versions.py)."""
        if self.versions is not None:
            await self.versions.bump(org_id)

    # --- endpoints -------------------------------------------------------------------------------------

    async def create_endpoint(self, org_id: str, body: EndpointIn) -> EndpointOut:
        await self.check_target(body.url)
        if await self.repo.count_endpoints(org_id) >= self.settings.webhook_max_endpoints_per_org:
            raise ProblemError(
                409, f"An organisation may have at most {self.settings.webhook_max_endpoints_per_org} endpoints"
            )
        now = utcnow()
        secret = body.secret or generate_secret()
        doc: Doc = {
            "_id": new_id(ENDPOINT_ID_PREFIX),
            "org_id": org_id,
            "url": body.url,
            "description": body.description,
            "event_types": body.event_types,
            "enabled": body.enabled,
            "headers": body.headers,
            "rate_limit": body.rate_limit,
            "concurrency": body.concurrency or self.settings.webhook_default_concurrency,
            "secrets": [{"value": self.box.encrypt(secret), "created_at": now, "expires_at": None}],
            "failing_since": None,
            "disabled_reason": None,
            "created_at": now,
            "updated_at": now,
        }
        await self.repo.insert_endpoint(doc)
        await self.changed(org_id)
        return endpoint_out(doc)

    async def endpoint(self, org_id: str, endpoint_id: str) -> Doc:
        doc = await self.repo.get_endpoint(org_id, endpoint_id)
        if doc is None:
            raise ProblemError(404, "No such endpoint")
        return doc

    async def update_endpoint(self, org_id: str, endpoint_id: str, body: EndpointPatch) -> EndpointOut:
        changes = body.model_dump(exclude_unset=True)
        for field in ("url", "description", "event_types", "enabled", "headers", "concurrency"):
            if field in changes and changes[field] is None:
                raise ProblemError(422, f"{field} cannot be null")
        if "url" in changes:
            await self.check_target(changes["url"])
        unset: list[str] = []
        if changes.get("enabled") is True:
            changes["disabled_reason"] = None
            changes["failing_since"] = None
        changes["updated_at"] = utcnow()
        doc = await self.repo.update_endpoint(org_id, endpoint_id, changes, unset)
        if doc is None:
            raise ProblemError(404, "No such endpoint")
        await self.changed(org_id)
        return endpoint_out(doc)

    async def delete_endpoint(self, org_id: str, endpoint_id: str) -> None:
        if not await self.repo.delete_endpoint(org_id, endpoint_id):
            raise ProblemError(404, "No such endpoint")
        await self.changed(org_id)

    async def secret(self, org_id: str, endpoint_id: str) -> SecretOut:
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
        doc = await self.endpoint(org_id, endpoint_id)
        now = utcnow()
        grace = self.settings.webhook_rotation_grace if body.grace_seconds is None else body.grace_seconds
        expires = now + timedelta(seconds=grace)
        kept = []
        for s in doc["secrets"]:
            was = as_datetime(s.get("expires_at"))
            if was is None or was > now:
                kept.append({**s, "expires_at": to_ms(min(was, expires) if was else expires)})
        if grace <= 0:
            kept = []
        new = {"value": self.box.encrypt(body.secret or generate_secret()), "created_at": now, "expires_at": None}
        secrets = [new, *kept[:4]]  # the current secret plus at most four still in their grace period
        updated = await self.repo.update_endpoint(org_id, endpoint_id, {"secrets": secrets, "updated_at": now})
        if updated is None:
            raise ProblemError(404, "No such endpoint")
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

        :raises ProblemError: 413 (``data`` over ``WEBHOOK_MAX_PAYLOAD_BYTES``), 422 (platform type, ``data``
            not strict JSON, or a reused key with a different request).
        """
        try:
            raw = jsonstrict.dumps(body.data)
        except jsonstrict.InvalidJSON as exc:
            raise ProblemError(
                422,
                f"The event data is not valid JSON: {exc}",
                errors=[{"location": "body", "field": "data", "message": str(exc), "type": "json_invalid"}],
            ) from exc
        if len(raw.encode()) > self.settings.webhook_max_payload_bytes:
            raise ProblemError(413, f"The event data exceeds {self.settings.webhook_max_payload_bytes} bytes")
        if check_catalogue:
            known = CATALOG.lookup(body.type)
            if known is not None:
                raise ProblemError(422, f"{body.type} is a platform event type; applications cannot post it")
        fingerprint = request_fingerprint(body.type, body.data)
        if body.idempotency_key:
            digest = hashlib.sha256(f"{org_id}\x00{body.idempotency_key}".encode()).hexdigest()[:32]
            event_id = f"{EVENT_ID_PREFIX}_k{digest}"
        else:
            event_id = new_id(EVENT_ID_PREFIX)
        now = utcnow()
        fresh = await self.repo.insert_event(
            {"_id": event_id, "org_id": org_id, "type": body.type, "request_hash": fingerprint, "created_at": now}
        )
        if not fresh:
            existing = await self.repo.get_event(org_id, event_id)
            if existing is not None and existing.get("request_hash", fingerprint) != fingerprint:
                raise ProblemError(
                    422,
                    "This idempotency key was already used with a different request; use a new key for a new event",
                    errors=[
                        {
                            "location": "body",
                            "field": "idempotency_key",
                            "message": "already used with a different type or data",
                            "type": "idempotency_key_reused",
                        }
                    ],
                )
            if existing is None or "messages" in existing:
                return event_id, int((existing or {}).get("messages", 0)), True
            # The first request stored the event but stopped before recording its fan-out (a crash, a database
            # error): finish it now. Messages are unique per (event, endpoint), so a concurrent first request
            # and this one cannot both create a message for one endpoint.
            await self.fan_out(org_id, event_id, body.type, body.data, now)
            count = await self.repo.messages.count_documents({"org_id": org_id, "event_id": event_id})
            await self.repo.events.update_one({"_id": event_id, "org_id": org_id}, {"$set": {"messages": count}})
            return event_id, count, True
        count = await self.fan_out(org_id, event_id, body.type, body.data, now)
        await self.repo.events.update_one({"_id": event_id, "org_id": org_id}, {"$set": {"messages": count}})
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
        """Messages due now for every subscribed endpoint (the worker claims them)."""
        targets = endpoints if endpoints is not None else subscribed(await self.repo.org_endpoints(org_id), event_type)
        body = payload_body(event_type, data, now)
        docs = [
            new_message(
                org_id=org_id, endpoint_id=e["_id"], event_id=event_id, event_type=event_type, body=body, now=now
            )
            for e in targets
        ]
        return len(await self.repo.insert_messages(docs))

    async def send_test(self, org_id: str, endpoint_id: str) -> str:
        doc = await self.endpoint(org_id, endpoint_id)
        if not doc.get("enabled"):
            raise ProblemError(409, "The endpoint is disabled; enable it first")
        now = utcnow()
        event_id = new_id(EVENT_ID_PREFIX)
        data = {"endpoint_id": endpoint_id, "message": "This is a test event from NovaPulse"}
        body = payload_body(EVENT_TEST, data, now)
        msg = new_message(
            org_id=org_id, endpoint_id=endpoint_id, event_id=event_id, event_type=EVENT_TEST, body=body, now=now
        )
        await self.repo.insert_messages([msg])
        return str(msg["_id"])

    async def message(self, org_id: str, message_id: str) -> Doc:
        doc = await self.repo.get_message(org_id, message_id)
        if doc is None:
            raise ProblemError(404, "No such message")
        return doc

    async def resend(self, org_id: str, message_id: str) -> Doc:
        doc, changed = await self.repo.requeue_message(org_id, message_id, utcnow())
        if doc is None:
            raise ProblemError(404, "No such message")
        if not changed:
            raise ProblemError(409, "The message is still being delivered; resend it once it has finished")
        return doc

    async def recover(self, org_id: str, endpoint_id: str, since: datetime, until: datetime | None) -> int:
        await self.endpoint(org_id, endpoint_id)
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        if until is not None and until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        found = await self.repo.failed_message_ids(org_id, endpoint_id, since, until)
        return await self.repo.requeue_many(org_id, found, utcnow())
