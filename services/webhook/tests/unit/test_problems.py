"""Every domain error of the service is answered as the service answered it before domain errors existed:
same status, title (the status phrase), detail and extra fields (``api.PROBLEMS``)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import pytest

from novapulse_runtime.errors import DomainError, to_problem
from novapulse_webhook import errors
from novapulse_webhook.api import PROBLEMS

pytestmark = pytest.mark.unit


def _field(field: str, message: str, type_: str) -> dict[str, Any]:
    return {"location": "body", "field": field, "message": message, "type": type_}


CASES: list[tuple[DomainError, int, str, dict[str, Any]]] = [
    (errors.EndpointNotFound(), 404, "No such endpoint", {}),
    (errors.MessageNotFound(), 404, "No such message", {}),
    (
        errors.UrlNotAllowed("the address 10.0.0.1 is not allowed"),
        422,
        "The endpoint URL is not allowed: the address 10.0.0.1 is not allowed",
        {"errors": [_field("url", "the address 10.0.0.1 is not allowed", "url_not_allowed")]},
    ),
    (errors.NullField("url"), 422, "url cannot be null", {}),
    (errors.TooManyEndpoints(100), 409, "An organisation may have at most 100 endpoints", {}),
    (errors.EndpointNotEnabled(), 409, "The endpoint is disabled; enable it first", {}),
    (
        errors.DataNotJson("Out of range float values are not JSON compliant"),
        422,
        "The event data is not valid JSON: Out of range float values are not JSON compliant",
        {"errors": [_field("data", "Out of range float values are not JSON compliant", "json_invalid")]},
    ),
    (errors.PayloadTooLarge(262144), 413, "The event data exceeds 262144 bytes", {}),
    (
        errors.PlatformEventType("user.registered"),
        422,
        "user.registered is a platform event type; applications cannot post it",
        {},
    ),
    (
        errors.IdempotencyKeyReused(),
        422,
        "This idempotency key was already used with a different request; use a new key for a new event",
        {"errors": [_field("idempotency_key", "already used with a different type or data", "idempotency_key_reused")]},
    ),
    (
        errors.MessageInFlight(),
        409,
        "The message is still being delivered; resend it once it has finished",
        {},
    ),
]


@pytest.mark.parametrize(("error", "status", "detail", "extra"), CASES, ids=lambda v: type(v).__name__)
def test_each_domain_error_keeps_its_answer(
    error: DomainError, status: int, detail: str, extra: dict[str, Any]
) -> None:
    problem = to_problem(error, PROBLEMS)
    assert (problem.status, problem.title, problem.detail, problem.extra) == (
        status,
        HTTPStatus(status).phrase,
        detail,
        extra,
    )
    assert problem.headers == {}
    assert problem.type == "about:blank"


def test_the_table_names_every_error_of_the_service() -> None:
    declared = {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, DomainError) and cls.__module__ == errors.__name__
    }
    assert declared == set(PROBLEMS)
    assert declared == {type(e) for e, *_ in CASES}
