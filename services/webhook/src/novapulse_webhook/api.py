"""HTTP views under ``/api/v1/webhooks``: parse, call :class:`~.service.WebhookService`, map to models.

Reading needs any member of the organisation; changing needs ``owner`` or ``admin``. Domain errors of the
service layer are answered as :data:`PROBLEMS` says.
"""

from __future__ import annotations

from aiohttp import web

from novapulse_runtime.catalog import CATALOG
from novapulse_runtime.errors import ErrorTable, Problem
from novapulse_runtime.paging import PageQuery
from novapulse_runtime.ratelimit import RateLimit, by_org
from novapulse_runtime.roles import MANAGERS
from novapulse_runtime.routes import Routes, path_id
from novapulse_runtime.tokens import principal, require_role

from .constants import API_PREFIX, ENDPOINT_ID_PATTERN, MESSAGE_ID_PATTERN
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
from .models import (
    AttemptList,
    EndpointIn,
    EndpointList,
    EndpointOut,
    EndpointPatch,
    EventAccepted,
    EventIn,
    EventTypeList,
    EventTypeOut,
    MessageList,
    MessageOut,
    MessageQuery,
    RecoverIn,
    RecoverOut,
    ResendOut,
    RotateIn,
    SecretOut,
    TestOut,
)
from .service import WebhookService

PROBLEMS: ErrorTable = {
    EndpointNotFound: Problem(404),
    MessageNotFound: Problem(404),
    UrlNotAllowed: Problem(422),
    NullField: Problem(422),
    DataNotJson: Problem(422),
    PlatformEventType: Problem(422),
    IdempotencyKeyReused: Problem(422),
    PayloadTooLarge: Problem(413),
    TooManyEndpoints: Problem(409),
    EndpointNotEnabled: Problem(409),
    MessageInFlight: Problem(409),
}
"""How each domain error of this service is answered (RFC 9457 problem; title: the status phrase)."""


def _endpoint_id(request: web.Request) -> str:
    return path_id(request, "endpoint_id", ENDPOINT_ID_PATTERN)


def _message_id(request: web.Request) -> str:
    return path_id(request, "message_id", MESSAGE_ID_PATTERN)


def build_routes(svc: WebhookService) -> Routes:
    """The service's routes (all require an access token)."""
    routes = Routes(prefix=API_PREFIX, tags=["webhooks"], problems=PROBLEMS)
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
        who = require_role(request, *MANAGERS)
        return await svc.create_endpoint(who.org_id, body)

    @routes.get("/endpoints", query=PageQuery, response=EndpointList, auth=True)
    async def list_endpoints(request: web.Request, query: PageQuery) -> EndpointList:
        """The organisation's endpoints, newest first."""
        who = principal(request)
        return await svc.list_endpoints(who.org_id, query, reveal_headers=who.has_role(*MANAGERS))

    @routes.get("/endpoints/{endpoint_id}", response=EndpointOut, auth=True, errors=(404,))
    async def get_endpoint(request: web.Request) -> EndpointOut:
        """One endpoint."""
        who = principal(request)
        return await svc.get_endpoint(who.org_id, _endpoint_id(request), reveal_headers=who.has_role(*MANAGERS))

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
        who = require_role(request, *MANAGERS)
        return await svc.update_endpoint(who.org_id, _endpoint_id(request), body)

    @routes.delete("/endpoints/{endpoint_id}", status=204, auth=True, errors=(404,))
    async def delete_endpoint(request: web.Request) -> None:
        """Delete an endpoint; its pending messages fail."""
        who = require_role(request, *MANAGERS)
        await svc.delete_endpoint(who.org_id, _endpoint_id(request))

    @routes.get("/endpoints/{endpoint_id}/secret", response=SecretOut, auth=True, errors=(404,))
    async def get_secret(request: web.Request) -> SecretOut:
        """The signing secret (and rotated secrets still in their grace period)."""
        who = require_role(request, *MANAGERS)
        return await svc.secret(who.org_id, _endpoint_id(request))

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
        who = require_role(request, *MANAGERS)
        return await svc.rotate_secret(who.org_id, _endpoint_id(request), body)

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
        who = require_role(request, *MANAGERS)
        return TestOut(message_id=await svc.send_test(who.org_id, _endpoint_id(request)))

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
        """Resend every failed message of this endpoint created since ``since`` (``dry_run``: only count them)."""
        who = require_role(request, *MANAGERS)
        count = await svc.recover(who.org_id, _endpoint_id(request), body.since, body.until, dry_run=body.dry_run)
        return RecoverOut(messages=count, dry_run=body.dry_run)

    @routes.get("/event-types", response=EventTypeList, auth=True)
    async def event_types(request: web.Request) -> EventTypeList:
        """The platform's public event types (what an endpoint's ``event_types`` can name), by name."""
        principal(request)
        return EventTypeList(
            items=[
                EventTypeOut(name=t.name, source=t.source, description=t.description)
                for t in CATALOG.all_types()
                if t.public
            ]
        )

    @routes.post("/events", body=EventIn, response=EventAccepted, status=202, auth=True, rate_limits=[event_limit])
    async def post_event(request: web.Request, body: EventIn) -> EventAccepted:
        """Deliver an application event to the organisation's subscribed endpoints (idempotent by key)."""
        who = require_role(request, *MANAGERS)
        event_id, count, duplicate = await svc.accept_event(who.org_id, body)
        return EventAccepted(event_id=event_id, messages=count, duplicate=duplicate)

    @routes.get("/messages", query=MessageQuery, response=MessageList, auth=True)
    async def list_messages(request: web.Request, query: MessageQuery) -> MessageList:
        """Messages, newest first; filter by endpoint, status, event type and creation time."""
        who = principal(request)
        return await svc.list_messages(who.org_id, query)

    @routes.get("/messages/{message_id}", response=MessageOut, auth=True, errors=(404,))
    async def get_message(request: web.Request) -> MessageOut:
        """One message with its payload."""
        who = principal(request)
        return await svc.get_message(who.org_id, _message_id(request))

    @routes.get("/messages/{message_id}/attempts", response=AttemptList, auth=True, errors=(404,))
    async def list_attempts(request: web.Request) -> AttemptList:
        """Every attempt of a message, oldest first."""
        who = principal(request)
        return await svc.list_attempts(who.org_id, _message_id(request))

    @routes.post("/messages/{message_id}/resend", response=ResendOut, status=202, auth=True, errors=(404, 409))
    async def resend(request: web.Request) -> ResendOut:
        """Send a finished message again (same ``webhook-id``, fresh retry schedule)."""
        who = require_role(request, *MANAGERS)
        return await svc.resend(who.org_id, _message_id(request))

    return routes
