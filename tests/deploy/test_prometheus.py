"""Alert rules: valid for promtool, every alert unit-tested by promtool, reading only series the runtime
exports, each with a runbook section in docs/operations.md, and the chart shipping the same file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import (
    CHART,
    DEPLOY,
    OPERATIONS,
    RULES,
    TARGET_LABELS,
    common_env_vars,
    deployed_services,
    load_yaml,
    promql_labels,
    promql_series,
    runtime_series,
    tool,
    worker_port,
)

PROM_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
# The alerts the platform must have (issue list): one or more rule for each concern.
REQUIRED_ALERTS = {
    "NovaPulseServiceDown",
    "NovaPulseTargetDown",
    "NovaPulseHigh5xxRatio",
    "NovaPulseHighP99Latency",
    "NovaPulseReadinessFailing",
    "NovaPulseRateLimiterFailingOpen",
    "NovaPulseDeadLettersGrowing",
    "NovaPulseConsumerLagHigh",
    "NovaPulseConsumerPendingHigh",
    "NovaPulseOutboxBacklogOld",
    "NovaPulseMemoryNearLimit",
}


def _rules() -> list[dict[str, Any]]:
    doc = load_yaml(RULES)
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _promtool() -> str:
    found = tool("promtool")
    if found is None:
        pytest.skip("promtool not on PATH (Debian: apt-get install -y prometheus)")
    return found


def _github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_every_required_alert_exists_once() -> None:
    names = [r["alert"] for r in _rules() if "alert" in r]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) >= REQUIRED_ALERTS, sorted(REQUIRED_ALERTS - set(names))


def test_alerts_have_severity_summary_and_runbook_section() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    anchors = {_github_anchor(m) for m in re.findall(r"^#{2,4}\s+(.+?)\s*$", text, flags=re.M)}
    for rule in _rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        ann = rule["annotations"]
        assert ann["summary"], rule["alert"]
        assert ann["description"], rule["alert"]
        page, _, anchor = ann["runbook"].partition("#")
        assert page == "docs/operations.md", rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"docs/operations.md has no section for {rule['alert']}"


def test_runbook_links_resolve() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    anchors = {_github_anchor(m) for m in re.findall(r"^#{2,4}\s+(.+?)\s*$", text, flags=re.M)}
    for link in re.findall(r"\]\(#([^)]+)\)", text):
        assert link in anchors, f"docs/operations.md links to a missing section #{link}"


def test_runbook_documents_every_shared_setting() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    for var in sorted(common_env_vars()):
        assert f"`{var}`" in text, f"docs/operations.md does not document {var}"


def test_rules_read_only_series_the_runtime_exports() -> None:
    exported = runtime_series()
    for rule in _rules():
        used = promql_series(rule["expr"])
        assert used, f"{rule['alert']}: no NovaPulse series found in {rule['expr']!r}"
        missing = used - exported.keys()
        assert not missing, f"{rule['alert']} reads series the runtime does not export: {sorted(missing)}"
        known = TARGET_LABELS.union(*(exported[s].labels for s in used))
        unknown = promql_labels(rule["expr"]) - known
        assert not unknown, f"{rule['alert']} uses labels no series has: {sorted(unknown)}"


def test_chart_ships_the_same_rules() -> None:
    assert (CHART / "files" / "prometheus-rules.yml").read_bytes() == RULES.read_bytes(), (
        "helm/novapulse/files/prometheus-rules.yml differs: cp deploy/prometheus/rules/novapulse.yml "
        "helm/novapulse/files/prometheus-rules.yml"
    )


def test_every_alert_has_a_promtool_unit_test() -> None:
    tested: set[str] = set()
    for path in PROM_TESTS:
        doc = load_yaml(path)
        assert doc["rule_files"] == ["../rules/novapulse.yml"], path.name
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    tested.add(check["alertname"])
    alerts = {r["alert"] for r in _rules()}
    assert alerts <= tested, f"alerts never shown to fire in deploy/prometheus/tests: {sorted(alerts - tested)}"


def test_promtool_check_rules() -> None:
    promtool = _promtool()
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in out.stdout


@pytest.mark.parametrize("case", PROM_TESTS, ids=[p.stem for p in PROM_TESTS])
def test_promtool_unit_tests(case: Path) -> None:
    promtool = _promtool()
    out = subprocess.run(
        [promtool, "test", "rules", case.name], cwd=case.parent, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_check_config() -> None:
    promtool = _promtool()
    config = DEPLOY / "prometheus" / "prometheus.yml"
    out = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(config)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_scrape_config_gives_the_contract_labels() -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "novapulse"]
    assert job["metrics_path"] == "/api/v1/metrics"
    targets = {name: sd["port"] for sd in job["dns_sd_configs"] for name in sd["names"]}
    for service, deployed in deployed_services().items():  # the suite and the console (api only)
        assert targets[f"{service}-api"] == deployed.port
        if "worker" in deployed.roles:
            assert targets[f"{service}-worker"] == worker_port(deployed.port)
        else:
            assert f"{service}-worker" not in targets
    relabel = {r["target_label"]: r for r in job["relabel_configs"]}
    assert set(relabel) == {"service", "role"}
    for label, replacement in (("service", "auth"), ("role", "worker")):
        rule = relabel[label]
        assert re.fullmatch(rule["regex"], "auth-worker")
        assert re.sub(rule["regex"], rule["replacement"].replace("$", "\\"), "auth-worker") == replacement
