"""A producer may give an event its id (an effect redone after a crash keeps it, so consumers dedupe it)."""

from __future__ import annotations

import pytest

from novapulse_runtime.bus.envelope import build
from novapulse_runtime.catalog.workflow import RunCompleted

pytestmark = pytest.mark.unit

DATA = RunCompleted(org_id="o1", run_id="wr_1", definition_id="wd_1", version=1)


def test_build_keeps_a_given_id_and_refuses_one_of_another_shape() -> None:
    given = "0190a0b0-0000-7000-8000-000000000001"
    assert build("workflow.run.completed", DATA, source="workflow", event_id=given).id == given
    assert build("workflow.run.completed", DATA, source="workflow").id != given
    with pytest.raises(ValueError, match="event id"):
        build("workflow.run.completed", DATA, source="workflow", event_id="has spaces")
