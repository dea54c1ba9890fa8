"""KEDA autoscaling of workers on their consumer group's backlog: the chart renders a ScaledObject per worker
that asks for it, watching exactly the streams that worker's group reads (checked against the consumers the
service really builds), and refuses contradictory values."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from novapulse_devkit.stack import _PortShift, dev_defaults
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import load_settings
from tests.deploy.support import CHART, load_yaml, service_specs
from tests.deploy.test_helm import SECRETS, by_kind, helm, render

STREAM = "novapulse:events:"


def _keda_values(**keda: Any) -> dict[str, Any]:
    return {
        "secrets": {"values": {**SECRETS, "REDIS_PASSWORD_KEDA": "x" * 32}},
        "keda": {"redisAddress": "redis:6379", "passwordSecretKey": "REDIS_PASSWORD_KEDA", **keda},
        "defaults": {"worker": {"keda": {"enabled": True}}},
    }


async def test_each_service_consumes_the_streams_the_chart_watches(
    redis_url: str, mongo_url: str, names: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``services.<name>.consumes`` in values.yaml = the streams of the consumers the worker role builds
    (its replay stream aside): a handler added for another service's events cannot be missed by KEDA."""
    values = load_yaml(CHART / "values.yaml")
    for name, spec in service_specs().items():
        if spec.worker is None:
            assert not values["services"].get(name, {}).get("consumes"), name
            continue
        env = dev_defaults(spec, 0, tmp_path, _PortShift(0))
        env.update({"REDIS_URL": redis_url, "MONGO_URL": mongo_url, "MONGO_DB": f"{names}_{name}"})
        env["EVENTS_NAMESPACE"] = "novapulse"
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        if "MAIL_CATCHER_PORT" in env:
            monkeypatch.setenv("MAIL_CATCHER_PORT", "0")
        rt = Runtime(load_settings(spec.settings_cls), "worker")
        try:
            await spec.worker(rt)
            streams = {s for c in rt.bus.consumers for s in c.streams() if s.startswith(STREAM)}
        finally:
            await rt.close()
        expected = sorted(s.removeprefix(STREAM) for s in streams)
        assert sorted(values["services"][name]["consumes"]) == expected, (name, expected)


def test_a_worker_with_keda_gets_a_scaled_object_per_group_with_one_trigger_per_stream() -> None:
    docs = render(_keda_values())
    scaled = by_kind(docs, "ScaledObject")
    values = load_yaml(CHART / "values.yaml")
    workers = {n for n, s in values["services"].items() if s["enabled"] and s.get("consumes")}
    assert set(scaled) == {f"np-novapulse-{n}-worker" for n in workers}
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    [auth] = by_kind(docs, "TriggerAuthentication").values()
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "np-novapulse-secrets", "key": "REDIS_PASSWORD_KEDA"}
    ]
    for name in workers:
        obj = scaled[f"np-novapulse-{name}-worker"]
        assert obj["spec"]["scaleTargetRef"]["name"] == f"np-novapulse-{name}-worker"
        triggers = obj["spec"]["triggers"]
        assert [t["metadata"]["stream"] for t in triggers] == [STREAM + s for s in values["services"][name]["consumes"]]
        for t in triggers:
            assert t["type"] == "redis-streams"
            assert t["metadata"]["consumerGroup"] == name
            assert t["metadata"]["lagCount"] == "1000"
            assert t["authenticationRef"]["name"] == "np-novapulse-keda-redis"
            assert all(isinstance(v, str) for v in t["metadata"].values())  # KEDA wants strings


def test_pending_entries_add_a_second_trigger_per_stream() -> None:
    values = _keda_values()
    values["defaults"]["worker"]["keda"]["pendingEntriesCount"] = 50
    obj = by_kind(render(values), "ScaledObject")["np-novapulse-notification-worker"]
    kinds = [("lagCount" in t["metadata"], "pendingEntriesCount" in t["metadata"]) for t in obj["spec"]["triggers"]]
    assert kinds.count((True, False)) == kinds.count((False, True)) > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"defaults": {"worker": {"autoscaling": {"enabled": True}}}}, "would both scale the worker"),
        ({"keda": {"redisAddress": ""}}, "keda.redisAddress"),
    ],
)
def test_contradictory_or_missing_values_fail_the_render(change: dict[str, Any], message: str) -> None:
    values = _keda_values()
    for key, part in change.items():
        merged = copy.deepcopy(values.get(key, {}))
        _merge(merged, part)
        values[key] = merged
    with pytest.raises(Exception, match=message):
        render(values)


def test_the_values_schema_refuses_a_bad_keda_setting() -> None:
    values = _keda_values()
    values["defaults"]["worker"]["keda"]["lagCount"] = 0
    with pytest.raises(Exception, match="lagCount"):
        helm.Chart.load(str(CHART)).render(values, name="np", namespace="novapulse", is_install=True)


def _merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    for k, v in part.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
