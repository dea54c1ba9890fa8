"""Grafana dashboards: valid JSON that Grafana's provisioning loads, every query reading series the runtime
exports with labels they have, every query valid PromQL (promtool), and the chart shipping the same files."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import (
    CHART,
    DASHBOARDS,
    DEPLOY,
    ROOT,
    TARGET_LABELS,
    load_yaml,
    promql_labels,
    promql_series,
    runtime_series,
    tool,
)

FILES = sorted(DASHBOARDS.glob("*.json"))
OVERVIEW_MUST_READ = {
    "novapulse_http_requests_total",
    "novapulse_http_request_duration_seconds_bucket",
    "novapulse_http_requests_in_flight",
    "novapulse_rate_limit_rejected_total",
    "novapulse_rate_limit_fail_open_total",
    "novapulse_health_check_up",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
}
BUS_MUST_READ = {
    "novapulse_events_published_total",
    "novapulse_events_consumed_total",
    "novapulse_events_failed_total",
    "novapulse_events_retried_total",
    "novapulse_events_dead_lettered_total",
    "novapulse_event_handler_duration_seconds_bucket",
    "novapulse_events_pending",
    "novapulse_events_lag",
    "novapulse_outbox_backlog",
    "novapulse_outbox_oldest_age_seconds",
}


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def _targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in doc["panels"] for t in p.get("targets", [])]


def _concrete(expr: str) -> str:
    """The query as Grafana sends it, with the dashboard variables filled in."""
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$service", ".*")
        .replace("$group", ".*")
    )


def test_there_is_an_overview_and_an_event_bus_dashboard() -> None:
    uids = {_load(p)["uid"] for p in FILES}
    assert {"novapulse-overview", "novapulse-event-bus"} <= uids
    assert len(uids) == len(FILES), "dashboard uids must be unique"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_dashboard_structure(path: Path) -> None:
    doc = _load(path)
    assert doc["title"]
    assert doc["schemaVersion"] >= 36
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in doc["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            # Every variable a query uses is defined by the dashboard (or built in).
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var in variables or var.startswith("__"), f"{panel['title']}: ${var} undefined"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_queries_read_series_the_runtime_exports(path: Path) -> None:
    exported = runtime_series()
    for target in _targets(_load(path)):
        expr = target["expr"]
        used = promql_series(expr)
        assert used, f"no NovaPulse series in {expr!r}"
        missing = used - exported.keys()
        assert not missing, f"{path.name}: {sorted(missing)} not exported by the runtime ({expr})"
        known = TARGET_LABELS.union(*(exported[s].labels for s in used))
        unknown = promql_labels(expr) - known
        assert not unknown, f"{path.name}: labels {sorted(unknown)} exist on none of {sorted(used)}"
        # A legend may only name labels the query keeps.
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
            assert label in known, f"{path.name}: legend {{{{{label}}}}} not a label of {expr}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_variable_queries_read_exported_series(path: Path) -> None:
    exported = runtime_series()
    for var in _load(path)["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
        assert match, var["definition"]
        selector, label = match.groups()
        (series,) = promql_series(selector)
        assert series in exported, var["definition"]
        assert label in TARGET_LABELS | exported[series].labels, var["definition"]


def test_dashboards_cover_http_and_event_bus_metrics() -> None:
    read: dict[str, set[str]] = {}
    for path in FILES:
        doc = _load(path)
        read[doc["uid"]] = set().union(*(promql_series(t["expr"]) for t in _targets(doc)))
    assert read["novapulse-overview"] >= OVERVIEW_MUST_READ, OVERVIEW_MUST_READ - read["novapulse-overview"]
    assert read["novapulse-event-bus"] >= BUS_MUST_READ, BUS_MUST_READ - read["novapulse-event-bus"]


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = tool("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian: apt-get install -y prometheus)")
    rules = []
    for path in FILES:
        for i, target in enumerate(_targets(_load(path))):
            rules.append({"record": f"dashboard:{path.stem.replace('-', '_')}:{i}", "expr": _concrete(target["expr"])})
    rules_file = tmp_path / "dashboard-queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8")
    out = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def test_provisioning_points_at_the_mounted_dashboards() -> None:
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "novapulse.yml")["providers"][0]
    datasource = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    compose = load_yaml(ROOT / "docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_chart_ships_the_same_dashboards() -> None:
    shipped = {p.name: p.read_bytes() for p in (CHART / "files" / "dashboards").glob("*.json")}
    source = {p.name: p.read_bytes() for p in FILES}
    assert shipped == source, "cp deploy/grafana/dashboards/*.json helm/novapulse/files/dashboards/"
