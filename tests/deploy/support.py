"""Shared facts for the deployment tests: where things are, which services exist, and what the runtime
really exports (metric names and labels, settings), so the deploy files are checked against the code."""

from __future__ import annotations

import importlib
import os
import re
import shutil
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from novapulse_runtime.bus.metrics import BusMetrics
from novapulse_runtime.constants import WORKER_PORT_OFFSET
from novapulse_runtime.metrics import Metrics
from novapulse_runtime.process import ServiceSpec
from novapulse_runtime.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = ROOT / "helm" / "novapulse"
RULES = DEPLOY / "prometheus" / "rules" / "novapulse.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
OPERATIONS = ROOT / "docs" / "operations.md"

# The suite as the brief names it: service -> (API port, business route prefix).
SUITE: dict[str, tuple[int, str]] = {
    "auth": (8101, "/api/v1/auth"),
    "webhook": (8102, "/api/v1/webhooks"),
    "notification": (8103, "/api/v1/notifications"),
    "workflow": (8104, "/api/v1/workflows"),
    "report": (8105, "/api/v1/reports"),
}
# Labels every scrape adds (deploy/prometheus/prometheus.yml and the chart's ServiceMonitor).
TARGET_LABELS = frozenset({"job", "instance", "service", "role"})


def worker_port(api_port: int) -> int:
    return api_port + WORKER_PORT_OFFSET


def present_services() -> list[str]:
    """Services whose package exists in this checkout (services/<name>/pyproject.toml)."""
    return sorted(p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml"))


def service_specs() -> dict[str, ServiceSpec]:
    """Installed services (entry point group ``novapulse.services``), loaded like ``make run`` does."""
    specs: dict[str, ServiceSpec] = {}
    for ep in entry_points(group="novapulse.services"):
        spec = ep.load()
        if isinstance(spec, ServiceSpec):
            specs[spec.name] = spec
    return specs


@dataclass(frozen=True)
class Deployed:
    """What the deploy files must run for one service: its api port, its processes and whether it owns a
    database."""

    name: str
    port: int
    roles: tuple[str, ...]
    database: bool


def deployed_services() -> dict[str, Deployed]:
    """The suite (installed or not) and every installed service (the console), by name. A service runs a
    worker unless its spec says ``worker is None``; it owns a database unless its settings say
    ``uses_database = False``."""
    specs = service_specs()
    found: dict[str, Deployed] = {}
    for name in sorted(set(SUITE) | set(present_services())):
        spec = specs.get(name)
        if name in SUITE:
            port = SUITE[name][0]
        else:
            assert spec is not None, f"services/{name} is not installed: make install"
            port = int(spec.settings_cls.model_fields["http_port"].default)
        roles = ("api",) if spec is not None and spec.worker is None else ("api", "worker")
        database = spec is None or spec.settings_cls.uses_database
        found[name] = Deployed(name, port, roles, database)
    return found


def common_env_vars() -> set[str]:
    """Every variable the shared runtime reads."""
    return {name.upper() for name in ServiceSettings.model_fields}


def required_env_vars(settings_cls: type[ServiceSettings]) -> set[str]:
    """Variables a service cannot start without (no default)."""
    return {name.upper() for name, f in settings_cls.model_fields.items() if f.is_required()}


@dataclass(frozen=True)
class Series:
    """One series name as Prometheus stores it, and its labels."""

    name: str
    labels: frozenset[str]


def runtime_series() -> dict[str, Series]:
    """Every series name the runtime (HTTP, health, rate limits, process, event bus) exports."""
    metrics = Metrics("deploy-test", "api")
    BusMetrics.of(metrics)
    found: dict[str, Series] = {}
    for collector in list(metrics.registry._collector_to_names):  # the registry's collectors
        if not hasattr(collector, "_labelnames"):  # process / platform collectors: unlabelled samples
            for family in collector.collect():
                for sample in family.samples:
                    found[sample.name] = Series(sample.name, frozenset(sample.labels))
            continue
        labels = frozenset(collector._labelnames)
        for family in collector.collect():
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_count", "_sum"),
                "summary": ("_count", "_sum"),
            }.get(family.type, ("",))
            for suffix in suffixes:
                extra = frozenset({"le"}) if suffix == "_bucket" else frozenset()
                found[family.name + suffix] = Series(family.name + suffix, labels | extra)
    found["up"] = Series("up", frozenset())
    return found


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SERIES = re.compile(r"\b((?:novapulse|process|python)_[a-zA-Z0-9_]+|up)\b(?!\s*\()")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def promql_series(expr: str) -> set[str]:
    """Series names an expression reads (string literals removed first, so label values do not count)."""
    return set(_SERIES.findall(_STRING.sub('""', expr)))


def promql_labels(expr: str) -> set[str]:
    """Label names an expression groups by or matches on."""
    bare = _STRING.sub('""', expr)
    labels: set[str] = set()
    for group in _GROUPING.findall(bare):
        labels.update(x.strip() for x in group.split(",") if x.strip())
    for selector in re.findall(r"\{([^}]*)\}", bare):
        labels.update(_MATCHER.findall(selector))
    return labels


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def tool(name: str, *extra_dirs: str) -> str | None:
    """A binary on PATH (or in one of ``extra_dirs``), else None."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *extra_dirs])
    return shutil.which(name, path=path)


def require_module(name: str) -> ModuleType:
    """Import a test-only package of the ``deploy`` dependency group. In CI (CI=true) a missing package
    is an error; on a workstation synced without the group the test is skipped with the reason."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    module: ModuleType = pytest.importorskip(
        name, reason=f"{name} is in the 'deploy' dependency group: uv sync --all-groups"
    )
    return module
