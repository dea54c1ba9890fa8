"""The definition language: every kind of fault is named by its JSON path; expressions are bounded."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from pydantic import ValidationError

from novapulse_runtime.parsing import validation_errors
from novapulse_workflow.constants import MAX_EXPRESSION_CHARS, MAX_STEPS
from novapulse_workflow.expressions import (
    ExpressionError,
    compile_expression,
    evaluate,
    render,
)
from novapulse_workflow.language import Definition, check, is_application_type

pytestmark = pytest.mark.unit


def base(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Welcome",
        "trigger": {"type": "user.registered"},
        "steps": [
            {"key": "hello", "type": "notify", "template": "workflow_notice", "user_id": "${trigger.data.user_id}"},
            {"key": "pause", "type": "delay", "seconds": 1},
            {
                "key": "branch",
                "type": "condition",
                "branches": [{"when": "trigger.data.role == 'owner'", "next": "tell"}],
                "default": "end",
            },
            {
                "key": "tell",
                "type": "emit",
                "event_type": "customer.onboarded",
                "data": {"u": "${trigger.data.user_id}"},
            },
        ],
    }
    body.update(over)
    return body


def faults(body: dict[str, Any]) -> dict[str, str]:
    """field path → fault type, whether the model or :func:`check` finds it."""
    try:
        defn = Definition.model_validate(body)
    except ValidationError as exc:
        return {e["field"]: e["type"] for e in validation_errors(exc, "body", Definition)}
    return {f["field"]: f["type"] for f in check(defn)}


def test_a_good_definition_has_no_fault() -> None:
    assert faults(base()) == {}


def test_semantic_faults_name_their_paths() -> None:
    body = base(trigger={"type": "user.no_such_type", "filter": "event.data.["})  # a platform domain
    steps = body["steps"]
    steps[0]["user_id"] = "${foo[}"  # bad template expression
    steps[1]["next"] = "nowhere"  # unknown step
    steps[2]["branches"][0]["when"] = "a ||"  # bad expression
    steps[2]["default"] = "missing"
    steps[3]["event_type"] = "user.registered"  # a platform type cannot be emitted
    steps.append({"key": "pause", "type": "delay", "until": "2030-01-01T00:00:00Z", "seconds": 3})  # dup + conflict
    steps.append({"key": "w", "type": "wait_for_event", "event_type": "nope", "wait_seconds": 5, "on_timeout": "x"})
    steps.append({"key": "n2", "type": "notify", "template": "t", "user_id": "u", "role": "owner"})
    steps.append({"key": "c2", "type": "emit", "event_type": "a.b", "catch": {"next": "zz"}})
    report = {"key": "r", "type": "report", "report_type": "signups", "requested_by": "${x[}", "last_seconds": 60}
    steps.append({**report, "start": "2030-01-01T00:00:00Z", "filters": {"role": "${y[}"}})  # period conflict
    assert faults(body) == {
        "trigger.type": "unknown_event_type",
        "trigger.filter": "expression",
        "steps.0.user_id": "expression",
        "steps.1.next": "unknown_step",
        "steps.2.branches.0.when": "expression",
        "steps.2.default": "unknown_step",
        "steps.3.event_type": "reserved_event_type",
        "steps.4.key": "duplicate_key",
        "steps.4.seconds": "conflict",
        "steps.5.event_type": "unknown_event_type",
        "steps.5.on_timeout": "unknown_step",
        "steps.6.user_id": "conflict",
        "steps.7.catch.next": "unknown_step",
        "steps.8.last_seconds": "conflict",
        "steps.8.requested_by": "expression",
        "steps.8.filters.role": "expression",
    }


def test_reserved_key_and_template_paths_inside_data() -> None:
    body = base()
    body["steps"][3]["data"] = {"nested": ["ok", "${bad[}"]}
    body["steps"][1]["key"] = "end"
    got = faults(body)
    assert got["steps.3.data.nested.1"] == "expression"
    assert got["steps.1.key"] == "reserved_key"


def test_structural_faults_from_the_model_name_their_paths() -> None:
    body = base()
    body["steps"][0]["key"] = "Not A Key"
    body["steps"][1]["type"] = "teleport"
    body["steps"][2]["retry"] = {"max_attempts": 99}
    got = faults(body)
    assert "steps.0.key" in got
    assert "steps.1" in got or any(k.startswith("steps.1") for k in got)
    assert "steps.2.retry.max_attempts" in got
    too_many = base(steps=[{"key": f"s{i}", "type": "delay", "seconds": 1} for i in range(MAX_STEPS + 1)])
    assert "steps" in faults(too_many)


def test_definition_size_is_limited() -> None:
    body = base()
    body["steps"][3]["data"] = {f"k{i}": "x" * 900 for i in range(80)}
    assert faults(body)[""] == "too_large"


def test_expressions_are_bounded() -> None:
    with pytest.raises(ExpressionError, match="longer"):
        compile_expression("a" * (MAX_EXPRESSION_CHARS + 1))
    nested = "[" + ",".join(["[" + ",".join(["[@,@,@,@,@]"] * 5) + "]"] * 5) + "]"  # 125 copies
    with pytest.raises(ExpressionError, match="multi-selects"):
        compile_expression(nested)
    with pytest.raises(ExpressionError, match="syntax nodes"):
        compile_expression("not_null(" + ",".join(["@"] * 250) + ")")
    with pytest.raises(ExpressionError, match="nests deeper"):
        compile_expression(" || ".join(["a"] * 100))
    with pytest.raises(ExpressionError, match="larger than"):
        evaluate("a", {"a": "x" * 70_000})
    with pytest.raises(ExpressionError, match="failed"):
        evaluate("abs(a)", {"a": "text"})


def test_expressions_cannot_reach_python() -> None:
    # JMESPath has no attribute access to Python objects, imports or calls of anything but its functions
    for text in ("__class__", "a.__class__.__mro__", "__import__('os')", "eval('1')"):
        with contextlib.suppress(ExpressionError):
            assert evaluate(text, {"a": {"b": 1}}) is None


def test_templates_render_whole_values_and_text() -> None:
    ctx = {"trigger": {"data": {"n": 3, "name": "Ada"}}}
    assert render({"n": "${trigger.data.n}", "s": "Hi ${trigger.data.name} (${trigger.data.n})"}, ctx) == {
        "n": 3,
        "s": "Hi Ada (3)",
    }


def test_cancel_on_faults_name_their_paths() -> None:
    body = base(cancel_on=[{"event_type": "user.disabled", "match": "event.data.user_id =="}, {"event_type": "x"}])
    assert faults(body) == {"cancel_on.0.match": "expression", "cancel_on.1.event_type": "unknown_event_type"}


def test_flow_control_key_faults_name_their_paths() -> None:
    body = base(flow={"idempotency": {"key": "a[", "window_seconds": 5}, "concurrency": {"key": "ok", "limit": 0}})
    assert faults(body) == {"flow.concurrency.limit": "greater_than_equal"}
    body["flow"]["concurrency"]["limit"] = 2
    assert faults(body) == {"flow.idempotency.key": "expression"}


def test_application_event_types_are_told_from_platform_types() -> None:
    assert is_application_type("invoice.paid")
    assert is_application_type("shipment")
    assert not is_application_type("user.registered")  # a catalogue type
    assert not is_application_type("user.registerd")  # a typo under a platform domain is not an app type
    assert not is_application_type("workflow.anything")
    assert not is_application_type("Invoice.Paid")
    assert not is_application_type("a." * 60 + "b")  # too long
    assert faults(base(trigger={"type": "invoice.paid"})) == {}
