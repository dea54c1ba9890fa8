"""The catalogue is built from each producing service's explicit ``EVENTS`` tuple; nothing registers on import."""

from __future__ import annotations

import pytest

from novapulse_runtime.catalog import (
    CATALOG,
    Catalog,
    EventData,
    EventType,
    auth,
    notification,
    report,
    webhook,
    workflow,
)

pytestmark = pytest.mark.unit


class _Data(EventData):
    """A test type."""

    n: int


def test_the_catalogue_is_exactly_the_services_event_tuples() -> None:
    declared = [*auth.EVENTS, *notification.EVENTS, *report.EVENTS, *webhook.EVENTS, *workflow.EVENTS]
    assert {et.name for et in CATALOG.all_types()} == {et.name for et in declared}
    assert len(declared) == len(CATALOG.all_types())
    for module in (auth, notification, report, webhook, workflow):
        assert {et.source for et in module.EVENTS} == {module.__name__.rsplit(".", 1)[1]}


def test_a_type_defined_twice_differently_is_refused_and_the_same_twice_is_not() -> None:
    one = EventType("test.one", _Data, source="test", public=False)
    catalog = Catalog((one,), (one,))
    assert catalog.lookup("test.one") is one
    assert one.description == "A test type."
    with pytest.raises(ValueError, match=r"test\.one"):
        Catalog((one,), (EventType("test.one", _Data, source="other", public=False),))
    assert catalog.lookup("test.two") is None
    assert catalog.sources() == {"test"}
