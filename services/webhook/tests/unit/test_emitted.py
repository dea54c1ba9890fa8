"""A workflow's ``emit`` step reaches endpoints as the organisation's own event; an emitted type that would
pass for a platform event, or is no type name, is refused before anything is stored (dead letter)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest

from novapulse_runtime.bus import PermanentError
from novapulse_webhook.intake import Intake

NOW = datetime(2026, 11, 30, tzinfo=UTC)


class NoEndpoints:
    """An endpoint cache with none: reaching it means the type was accepted."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def org_endpoints(self, org_id: str) -> list[dict[str, Any]]:
        self.asked.append(org_id)
        return []


def intake(endpoints: NoEndpoints) -> Intake:
    unused = cast(Any, None)
    return Intake(
        unused, unused, cast(Any, endpoints), unused, unused, lease=cast(Any, None), submit=unused, wake=unused
    )


@pytest.mark.parametrize("forged", ["user.registered", "webhook.endpoint.disabled", "Bad Type", "a" * 200])
async def test_an_emitted_platform_or_invalid_type_is_refused(forged: str) -> None:
    endpoints = NoEndpoints()
    with pytest.raises(PermanentError):
        await intake(endpoints).on_event("e1", "o1", forged, {}, NOW, application=True)
    assert endpoints.asked == []


async def test_an_application_type_goes_to_the_organisations_endpoints() -> None:
    endpoints = NoEndpoints()
    assert await intake(endpoints).on_event("e1", "o1", "customer.onboarded", {"a": 1}, NOW, application=True) == 0
    assert endpoints.asked == ["o1"]


async def test_a_type_outside_the_catalogue_is_not_fanned_out_as_a_platform_event() -> None:
    endpoints = NoEndpoints()
    assert await intake(endpoints).on_event("e1", "o1", "customer.onboarded", {}, NOW) == 0
    assert endpoints.asked == []
