"""schemathesis against every service's live API, authenticated, with every check: any finding fails.

The engine runs in this process (``tests/contract/fuzz.py``) against the real ``api`` process, so it is part
of ``.venv/bin/pytest`` and ``make test``. Seed, example count and generation are fixed so a run is
reproducible and bounded in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from novapulse_devkit.testing import ServiceProcess, TokenIssuer

from . import fuzz
from .conftest import OPERATIONS_TOKEN, PREFIXES, start_api

pytestmark = pytest.mark.e2e

OPERATOR_PATHS = r"/events/(streams|dead-letters)"
"""The operations routes: fuzzed in a pass of their own with the operations token."""
TENANT_EXCLUDED = rf"{OPERATOR_PATHS}|^/api/v1/auth/logout$"
"""Left out of the tenant pass: the operations routes (their own pass) and auth's ``/logout``, which revokes the
shared token's session everywhere, so every later case would only meet 401. ``/logout`` takes no input; its
behaviour is tested in ``services/auth/tests/integration/test_revocation.py``."""

_SECRET = "the request is only accepted with a secret the fuzzer cannot know ({}); any other value is a 400"
_POLICY = (
    "the password policy (at least 8 characters after NFKC, not a common password, not repetitive, not the"
    " e-mail or name) cannot be stated in JSON Schema, so schema-valid passwords such as '0' are a 422"
)
WAIVED: dict[tuple[str, str], str | tuple[str, str]] = {
    ("POST /api/v1/auth/invites/accept", "positive_data_acceptance"): _SECRET.format("an invite token")
    + "; "
    + _POLICY,
    ("POST /api/v1/auth/password", "positive_data_acceptance"): _SECRET.format("the current password") + "; " + _POLICY,
    ("POST /api/v1/auth/mfa/enable", "positive_data_acceptance"): _SECRET.format("the TOTP code of a set-up"),
    ("POST /api/v1/auth/mfa/disable", "positive_data_acceptance"): _SECRET.format("the password and TOTP code"),
    ("POST /api/v1/auth/mfa/recovery-codes", "positive_data_acceptance"): _SECRET.format("a current TOTP code"),
    ("POST /api/v1/auth/register", "positive_data_acceptance"): _POLICY,
    ("POST /api/v1/auth/register/verify", "positive_data_acceptance"): _SECRET.format(
        "a mailed registration token and its password"
    ),
}
WAIVED[("POST /api/v1/reports", "positive_data_acceptance")] = (
    "a report's rules span fields, which JSON Schema cannot state: the time range must be non-empty (end after"
    " start) and at most MAX_RANGE_DAYS long, filters must be columns of the chosen type, and the time zone"
    " must exist in the IANA database; schema-valid requests breaking them are a 422"
)
_HEADER_TWICE = (
    "HTTP header names are case-insensitive (RFC 9110 §5.1), so custom headers naming one header twice in"
    " different cases ('H' and 'h') are a 422; JSON Schema cannot state key uniqueness without case",
    "is given twice",
)
for _operation in ("POST /api/v1/webhooks/endpoints", "PATCH /api/v1/webhooks/endpoints/{endpoint_id}"):
    WAIVED[(_operation, "positive_data_acceptance")] = _HEADER_TWICE
_DEFINITION = (
    "a workflow definition's cross-references (step keys named by next, branches, catch), its expressions"
    " (JMESPath syntax and cost bounds) and its catalogue event types cannot be stated in JSON Schema, so a"
    " schema-valid definition with such faults is a 422 'Invalid definition' naming each fault's path",
    '"title": "Invalid definition"',
)
for _operation in ("POST /api/v1/workflows/definitions", "PUT /api/v1/workflows/definitions/{definition_id}"):
    WAIVED[(_operation, "positive_data_acceptance")] = _DEFINITION
WAIVED[("POST /api/v1/workflows/events", "positive_data_acceptance")] = (
    "an application event type must be neither a catalogue type nor under a platform domain (user.*, report.*…),"
    " and the data must be storable (no key with a NUL character or a leading $), which JSON Schema cannot"
    " state; such an event is a 422 'Invalid event' naming the field",
    '"title": "Invalid event"',
)
"""(operation, check) findings that are expected, each with its reason; every other finding fails the test.
All are positive_data_acceptance: on auth routes whose acceptance depends on a secret or on the password
policy (answered 400/422, which the check counts as refusing valid data), on webhook endpoint writes only
when the answer says a custom header is given twice in different cases, and on workflow definition writes only
when the answer is the language's own 'Invalid definition', and on workflow events only when the answer is
'Invalid event'."""


@pytest.mark.timeout(600)
@pytest.mark.parametrize("service", sorted(PREFIXES))
async def test_schemathesis_finds_nothing(
    service: str, spawn: Callable[..., ServiceProcess], token_issuer: TokenIssuer, names: str
) -> None:
    api = await start_api(service, spawn, token_issuer, names)
    started = time.monotonic()
    tenant = fuzz.run(api.openapi_url, api.token, exclude_path=TENANT_EXCLUDED, waived=WAIVED)
    operator = fuzz.run(api.openapi_url, OPERATIONS_TOKEN, include_path=OPERATOR_PATHS, waived=WAIVED)
    elapsed = time.monotonic() - started
    for name, report in (("tenant", tenant), ("operator", operator)):
        print(f"schemathesis {service} {name}: {len(report.operations)} scenarios, {report.cases} cases")
        print("\n".join(report.waived))
    print(f"schemathesis {service}: {elapsed:.1f}s")
    assert tenant.cases > 0
    assert operator.cases > 0
    failures = tenant.text() + operator.text()
    assert not failures, failures + "\n" + api.process.logs()[-3000:]
    assert '"level": "error"' not in api.process.logs()
