"""The webhook service's domain errors: what the service layer raises when a request cannot be done.

They know no HTTP; ``api.PROBLEMS`` maps each class to its answer (status and title), and the detail text
and extra fields (``errors=[...]``) travel with the error.
"""

from __future__ import annotations

from novapulse_runtime.errors import Conflict, Invalid, NotFound, field_error


class EndpointNotFound(NotFound):
    """No endpoint with this id in the caller's organisation (404)."""

    def __init__(self) -> None:
        super().__init__("No such endpoint")


class MessageNotFound(NotFound):
    """No message with this id in the caller's organisation (404)."""

    def __init__(self) -> None:
        super().__init__("No such message")


class UrlNotAllowed(Invalid):
    """The endpoint URL is refused by the address policy (SSRF guard, ``ssrf.py``) (422, field error on
    ``url``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The endpoint URL is not allowed: {reason}",
            errors=[field_error("url", reason, "url_not_allowed")],
        )


class NullField(Invalid):
    """A PATCH sets a field that cannot be null to ``null`` (422)."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field} cannot be null")


class TooManyEndpoints(Conflict):
    """The organisation already has ``WEBHOOK_MAX_ENDPOINTS_PER_ORG`` endpoints (409)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"An organisation may have at most {limit} endpoints")


class EndpointNotEnabled(Conflict):
    """A test event for a disabled endpoint (409)."""

    def __init__(self) -> None:
        super().__init__("The endpoint is disabled; enable it first")


class DataNotJson(Invalid):
    """The event ``data`` cannot be written as strict JSON (RFC 8259: no ``NaN``/``Infinity``) (422)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The event data is not valid JSON: {reason}",
            errors=[field_error("data", reason, "json_invalid")],
        )


class PayloadTooLarge(Invalid):
    """The event ``data`` is over ``WEBHOOK_MAX_PAYLOAD_BYTES`` bytes as JSON (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The event data exceeds {limit} bytes")


class PlatformEventType(Invalid):
    """An application posts an event type of the platform catalogue (422)."""

    def __init__(self, event_type: str) -> None:
        super().__init__(f"{event_type} is a platform event type; applications cannot post it")


class IdempotencyKeyReused(Invalid):
    """The idempotency key was used before with a different request (422, as
    draft-ietf-httpapi-idempotency-key-header §2.7 says)."""

    def __init__(self) -> None:
        super().__init__(
            "This idempotency key was already used with a different request; use a new key for a new event",
            errors=[
                field_error("idempotency_key", "already used with a different type or data", "idempotency_key_reused")
            ],
        )


class MessageInFlight(Conflict):
    """A resend of a message that is still being delivered (409)."""

    def __init__(self) -> None:
        super().__init__("The message is still being delivered; resend it once it has finished")
