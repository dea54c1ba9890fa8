"""HTTP views under ``/api/v1/webhooks``: parse, call :class:`~.service.WebhookService`, map to models.

Reading needs any member of the organisation; changing needs ``owner`` or ``admin``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novapulse_runtime.problems import ProblemError
from novapulse_runtime.ratelimit import RateLimit, by_org
from novapulse_runtime.routes import Routes
from novapulse_runtime.tokens import principal, require_role

from .clock import stamp
from .constants import API_PREFIX
from .models import (
    AttemptList,
    AttemptOut,
    EndpointIn,
    EndpointList,
    EndpointOut,
    EndpointPatch,
    EventAccepted,
    EventIn,
    MessageList,
    MessageOut,
    MessageQuery,
    PageQuery,
    RecoverIn,
    RecoverOut,
    ResendOut,
    RotateIn,
    SecretOut,
    TestOut,
)
from .service import WebhookService, endpoint_out, message_out

WRITERS = ("owner", "admin")
_MAX_ID = 64


def _id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not value or len(value) > _MAX_ID:
        raise ProblemError(404, "Not found")
    return value


def build_routes(svc: WebhookService) -> Routes:
    """The service's routes (all require an access token)."""
    routes = Routes(prefix=API_PREFIX, tags=["webhooks"])
    create_limit = RateLimit("webhook-endpoint-write", 120, 60, by_org)
    event_limit = RateLimit("webhook-events", 2000, 1, by_org)

    @routes.post(
        "/endpoints",
        body=EndpointIn,
        response=EndpointOut,
        status=201,
        auth=True,
        rate_limits=[create_limit],
        errors=(409,),
    )
    async def create_endpoint(request: web.Request, body: EndpointIn) -> EndpointOut:
        """Register an endpoint (a signing secret is generated unless given)."""
        who = require_role(request, *WRITERS)
        return await svc.create_endpoint(who.org_id, body)

    @routes.get("/endpoints", query=PageQuery, response=EndpointList, auth=True)
    async def list_endpoints(request: web.Request, query: PageQuery) -> EndpointList:
        """The organisation's endpoints, newest first."""
        who = principal(request)
        docs = await svc.repo.list_endpoints(who.org_id, query.limit, query.cursor)
        cursor = docs[-1]["_id"] if len(docs) == query.limit else None
        return EndpointList(
            items=[endpoint_out(d, reveal_headers=who.has_role(*WRITERS)) for d in docs], next_cursor=cursor
        )

    @routes.get("/endpoints/{endpoint_id}", response=EndpointOut, auth=True, errors=(404,))
    async def get_endpoint(request: web.Request) -> EndpointOut:
        """One endpoint."""
        who = principal(request)
        doc = await svc.endpoint(who.org_id, _id(request, "endpoint_id"))
        return endpoint_out(doc, reveal_headers=who.has_role(*WRITERS))

    @routes.patch(
        "/endpoints/{endpoint_id}",
        body=EndpointPatch,
        response=EndpointOut,
        auth=True,
        rate_limits=[create_limit],
        errors=(404,),
    )
    async def update_endpoint(request: web.Request, body: EndpointPatch) -> EndpointOut:
        """Change an endpoint (re-enabling clears its failure state)."""
        who = require_role(request, *WRITERS)
        return await svc.update_endpoint(who.org_id, _id(request, "endpoint_id"), body)

    @routes.delete("/endpoints/{endpoint_id}", status=204, auth=True, errors=(404,))
    async def delete_endpoint(request: web.Request) -> None:
        """Delete an endpoint; its pending messages fail."""
        who = require_role(request, *WRITERS)
        await svc.delete_endpoint(who.org_id, _id(request, "endpoint_id"))

    @routes.get("/endpoints/{endpoint_id}/secret", response=SecretOut, auth=True, errors=(404,))
    async def get_secret(request: web.Request) -> SecretOut:
        """The signing secret (and rotated secrets still in their grace period)."""
        who = require_role(request, *WRITERS)
        return await svc.secret(who.org_id, _id(request, "endpoint_id"))

    @routes.post(
        "/endpoints/{endpoint_id}/secret/rotate",
        body=RotateIn,
        response=SecretOut,
        auth=True,
        rate_limits=[create_limit],
        errors=(404,),
    )
    async def rotate_secret(request: web.Request, body: RotateIn) -> SecretOut:
        """Start signing with a new secret; the old one keeps signing alongside for the grace period."""
        who = require_role(request, *WRITERS)
        return await svc.rotate_secret(who.org_id, _id(request, "endpoint_id"), body)

    @routes.post(
        "/endpoints/{endpoint_id}/test",
        response=TestOut,
        status=202,
        auth=True,
        rate_limits=[create_limit],
        errors=(404, 409),
    )
    async def send_test(request: web.Request) -> TestOut:
        """Send a ``webhook.test`` event to this endpoint."""
        who = require_role(request, *WRITERS)
        return TestOut(message_id=await svc.send_test(who.org_id, _id(request, "endpoint_id")))

    @routes.post(
        "/endpoints/{endpoint_id}/recover",
        body=RecoverIn,
        response=RecoverOut,
        status=202,
        auth=True,
        rate_limits=[create_limit],
        errors=(404,),
    )
    async def recover(request: web.Request, body: RecoverIn) -> RecoverOut:
        """Resend every failed message of this endpoint created since ``since``."""
        who = require_role(request, *WRITERS)
        count = await svc.recover(who.org_id, _id(request, "endpoint_id"), body.since, body.until)
        return RecoverOut(messages=count)

    @routes.post("/events", body=EventIn, response=EventAccepted, status=202, auth=True, rate_limits=[event_limit])
    async def post_event(request: web.Request, body: EventIn) -> EventAccepted:
        """Deliver an application event to the organisation's subscribed endpoints (idempotent by key)."""
        who = require_role(request, *WRITERS)
        event_id, count, duplicate = await svc.accept_event(who.org_id, body)
        return EventAccepted(event_id=event_id, messages=count, duplicate=duplicate)

    @routes.get("/messages", query=MessageQuery, response=MessageList, auth=True)
    async def list_messages(request: web.Request, query: MessageQuery) -> MessageList:
        """Messages, newest first; filter by endpoint, status, event type and creation time."""
        who = principal(request)
        filters: dict[str, Any] = {}
        if query.endpoint_id:
            filters["endpoint_id"] = query.endpoint_id
        if query.status:
            filters["status"] = str(query.status)
        if query.event_type:
            filters["event_type"] = query.event_type
        created: dict[str, Any] = {}
        if query.since:
            created["$gte"] = query.since
        if query.until:
            created["$lte"] = query.until
        if created:
            filters["created_at"] = created
        docs = await svc.repo.list_messages(who.org_id, filters, query.limit, query.cursor)
        cursor = docs[-1]["_id"] if len(docs) == query.limit else None
        return MessageList(items=[message_out(d) for d in docs], next_cursor=cursor)

    @routes.get("/messages/{message_id}", response=MessageOut, auth=True, errors=(404,))
    async def get_message(request: web.Request) -> MessageOut:
        """One message with its payload."""
        who = principal(request)
        return message_out(await svc.message(who.org_id, _id(request, "message_id")), with_payload=True)

    @routes.get("/messages/{message_id}/attempts", response=AttemptList, auth=True, errors=(404,))
    async def list_attempts(request: web.Request) -> AttemptList:
        """Every attempt of a message, oldest first."""
        who = principal(request)
        message_id = _id(request, "message_id")
        await svc.message(who.org_id, message_id)
        docs = await svc.repo.list_attempts(who.org_id, message_id)
        return AttemptList(
            items=[
                AttemptOut(
                    id=d["_id"],
                    message_id=d["message_id"],
                    endpoint_id=d["endpoint_id"],
                    attempt=d["attempt"],
                    started_at=stamp(d["started_at"]),
                    url=d.get("url", ""),
                    request_headers=d.get("request_headers") or {},
                    status=d.get("status"),
                    response_body=d.get("response_body"),
                    duration_ms=d.get("duration_ms"),
                    error=d.get("error"),
                    outcome=d["outcome"],
                )
                for d in docs
            ]
        )

    @routes.post("/messages/{message_id}/resend", response=ResendOut, status=202, auth=True, errors=(404, 409))
    async def resend(request: web.Request) -> ResendOut:
        """Send a finished message again (same ``webhook-id``, fresh retry schedule)."""
        who = require_role(request, *WRITERS)
        doc = await svc.resend(who.org_id, _id(request, "message_id"))
        return ResendOut(id=doc["_id"], status=doc["status"])

    return routes
