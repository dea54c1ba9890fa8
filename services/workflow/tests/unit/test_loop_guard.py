"""Events that answer a run's own effects start no run (no self-sustaining loops); others do."""

from __future__ import annotations

from typing import Any

import pytest

from novapulse_workflow.triggers import caused_by_a_run


def _event(type_: str, **data: Any) -> dict[str, Any]:
    return {"id": "e1", "type": type_, "source": "x", "org_id": "o", "data": data}


@pytest.mark.parametrize(
    ("event", "caused"),
    [
        (_event("report.completed", request_id="wf-effect-1", report_id="r"), True),
        (_event("report.failed", request_id="wf-effect-1", error="no"), True),
        (_event("report.completed", request_id="", report_id="r"), False),  # asked through POST /reports
        (_event("notification.delivered", cause_event_type="notification.requested"), True),
        (_event("notification.failed", cause_event_type="notification.requested"), True),
        (_event("notification.delivered", cause_event_type="user.registered"), False),
        (_event("user.registered", request_id="anything"), False),
        ({"id": "e1", "type": "report.completed", "data": "not an object"}, False),
    ],
)
def test_only_answers_to_a_runs_commands_are_kept_from_starting_runs(event: dict[str, Any], caused: bool) -> None:
    assert caused_by_a_run(event) is caused
