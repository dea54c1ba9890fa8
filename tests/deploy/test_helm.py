"""The Helm chart, rendered by Helm's own engine (PyPI helm-python-sdk) and every manifest checked against
the Kubernetes schemas (PyPI kubernetes-validate); then the operational promises are checked on the
rendered objects: api and worker apart, probes, shutdown timing, security, secrets, routing, monitoring."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from novapulse_runtime.constants import LIVE_PATH, METRICS_PATH, READY_PATH
from tests.deploy.support import (
    CHART,
    RULES,
    SUITE,
    common_env_vars,
    deployed_services,
    load_yaml,
    present_services,
    require_module,
    required_env_vars,
    service_specs,
    worker_port,
)

KUBE_VERSION = "1.30.0"
RELEASE = "np"
FULL = "np-novapulse"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
SECRETS = {
    "REDIS_URL": "redis://redis:6379/0",
    "MONGO_URL": "mongodb://mongo:27017/?replicaSet=rs0",
    "AUTH_ENCRYPTION_KEYS": "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=",
    "WEBHOOK_SECRET_KEYS": "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=",
    "REPORT_DOWNLOAD_SECRET": "not-a-real-secret-but-long-enough-0123456789",
    "CONSOLE_SESSION_KEYS": "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=",
}

helm: Any = require_module("helm_python")


def _full_values() -> dict[str, Any]:
    values: dict[str, Any] = load_yaml(CHART / "ci" / "full-values.yaml")
    return values


def _minimal_values() -> dict[str, Any]:
    return {"secrets": {"values": dict(SECRETS)}}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    out: dict[str, str] = chart.render(values, name=RELEASE, namespace="novapulse", is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, dep in by_kind(docs, "Deployment").items():
        yield name, dep, dep["spec"]["template"]["spec"]["containers"][0]


@pytest.fixture(scope="module")
def full() -> list[dict[str, Any]]:
    return render(_full_values())


@pytest.fixture(scope="module")
def minimal() -> list[dict[str, Any]]:
    return render(_minimal_values())


def test_helm_lint_is_clean() -> None:
    for values in (_full_values(), _minimal_values()):
        report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not problems, report
        assert not report["errors"], report


@pytest.mark.parametrize("which", ["minimal", "full"])
def test_manifests_match_the_kubernetes_schemas(which: str, request: pytest.FixtureRequest) -> None:
    kv = require_module("kubernetes_validate")
    docs: list[dict[str, Any]] = request.getfixturevalue(which)
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue  # Prometheus Operator CRDs: checked structurally below
        kv.validate(doc, KUBE_VERSION, strict=True)


def test_validation_catches_a_broken_manifest(minimal: list[dict[str, Any]]) -> None:
    """The schema check is real: a misspelled field in a rendered Deployment is refused."""
    kv = require_module("kubernetes_validate")
    dep = copy.deepcopy(next(iter(by_kind(minimal, "Deployment").values())))
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, KUBE_VERSION, strict=True)


def test_enabled_services_get_separate_api_and_worker_deployments(
    minimal: list[dict[str, Any]], full: list[dict[str, Any]]
) -> None:
    defaults = set(present_services())  # every service whose package exists is enabled by default
    deployed = deployed_services()  # a worker Deployment only for a service that has one (not the console)
    assert set(by_kind(minimal, "Deployment")) == {f"{FULL}-{s}-{r}" for s in defaults for r in deployed[s].roles}
    assert set(by_kind(full, "Deployment")) == {f"{FULL}-{s}-{r}" for s, d in deployed.items() for r in d.roles}
    for name, dep, container in containers(full):
        service, role = name.removeprefix(f"{FULL}-").rsplit("-", 1)
        assert container["args"] == [role]
        assert container["image"].startswith(f"novapulse/{service}:")
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["novapulse.io/service"] == service
        assert pod_labels["app.kubernetes.io/component"] == role
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_probes_ports_and_env(full: list[dict[str, Any]]) -> None:
    config = next(iter(by_kind(full, "ConfigMap").values()))["data"]
    specs = service_specs()
    deployed = deployed_services()
    for name, _dep, c in containers(full):
        service, role = name.removeprefix(f"{FULL}-").rsplit("-", 1)
        port = deployed[service].port if role == "api" else worker_port(deployed[service].port)
        assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert c["livenessProbe"]["httpGet"] == {"path": LIVE_PATH, "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": READY_PATH, "port": "http"}
        assert c["startupProbe"]["httpGet"]["port"] == "http"
        assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 30
        env = {e["name"]: e for e in c["env"]}
        assert env["SERVICE_NAME"]["value"] == service
        assert env["HTTP_PORT"]["value"] == str(deployed[service].port)
        assert env["WORKER_HTTP_PORT"]["value"] == str(worker_port(deployed[service].port))
        provided = set(env) | set(config)
        if deployed[service].database:
            assert env["MONGO_DB"]["value"] == f"novapulse_{service}"
            assert common_env_vars() <= provided, sorted(common_env_vars() - provided)
        else:  # the console owns no database: neither a MongoDB URL nor a database name
            assert not {"MONGO_DB", "MONGO_URL"} & set(env)
            assert common_env_vars() - {"MONGO_DB", "MONGO_URL"} <= provided
        if service in specs:
            needed = required_env_vars(specs[service].settings_cls)
            assert needed <= provided, f"{service} needs {sorted(needed - provided)}"
        for key in ("REDIS_URL", "MONGO_URL") if deployed[service].database else ("REDIS_URL",):
            assert env[key]["valueFrom"]["secretKeyRef"] == {"name": f"{FULL}-secrets", "key": key}


def test_the_console_calls_the_release_services_with_a_secure_cookie_and_the_shared_operations_token(
    full: list[dict[str, Any]],
) -> None:
    if "console" not in present_services():
        pytest.skip("no console in this checkout")
    deployments = by_kind(full, "Deployment")
    console = deployments[f"{FULL}-console-api"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in console["env"]}
    for service, (port, _prefix) in SUITE.items():
        assert env[f"{service.upper()}_API_URL"]["value"] == f"http://{FULL}-{service}-api:{port}"
        assert f"{FULL}-{service}-api" in by_kind(full, "Service")
    assert env["CONSOLE_COOKIE_SECURE"]["value"] == "true"
    assert env["CONSOLE_SESSION_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{FULL}-secrets",
        "key": "CONSOLE_SESSION_KEYS",
    }
    auth = deployments[f"{FULL}-auth-api"]["spec"]["template"]["spec"]["containers"][0]
    auth_token = next(e for e in auth["env"] if e["name"] == "OPERATIONS_TOKEN")
    assert env["OPERATIONS_TOKEN"] == auth_token  # the same key of the same Secret as the services
    assert "CONSOLE_SESSION_KEYS" not in {e["name"] for e in auth["env"]}  # least privilege

    values = _minimal_values()
    values["services"] = {"report": {"enabled": False}}
    docs = render(values)
    env = {
        e["name"]: e
        for e in by_kind(docs, "Deployment")[f"{FULL}-console-api"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["REPORT_API_URL"]["value"] == ""  # a service not deployed: its pages are hidden
    values["services"] = {"auth": {"enabled": False}}
    with pytest.raises(helm.HelmError, match=r"needs services\.auth\.enabled"):
        render(values)
    values = _minimal_values()
    del values["secrets"]["values"]["CONSOLE_SESSION_KEYS"]
    with pytest.raises(helm.HelmError, match="CONSOLE_SESSION_KEYS is required by the console service"):
        render(values)


def test_graceful_shutdown_fits_in_the_grace_period(full: list[dict[str, Any]]) -> None:
    config = next(iter(by_kind(full, "ConfigMap").values()))["data"]
    overridden = 0
    for name, dep, c in containers(full):
        own = [e["value"] for e in c["env"] if e["name"] == "SHUTDOWN_TIMEOUT"]  # env wins over envFrom
        overridden += bool(own)
        shutdown = float(own[0] if own else config["SHUTDOWN_TIMEOUT"])
        pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep", name
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > shutdown + float(pre_stop[1]), f"{name}: {grace}s cannot hold preStop + SHUTDOWN_TIMEOUT"
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert overridden == 2, "notification's api and worker drain longer (services.notification.shutdownTimeout)"


def test_a_grace_period_shorter_than_the_drain_is_refused() -> None:
    values = _minimal_values()
    values["defaults"] = {"terminationGracePeriodSeconds": 20}
    with pytest.raises(helm.HelmError, match="terminationGracePeriodSeconds"):
        render(values)


def test_pods_run_non_root_on_a_read_only_root(full: list[dict[str, Any]]) -> None:
    for name, dep, c in containers(full):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert c["resources"]["requests"]
        assert c["resources"]["limits"]["memory"]


def test_secrets_come_from_the_chart_secret_or_an_existing_one(minimal: list[dict[str, Any]]) -> None:
    secret = by_kind(minimal, "Secret")[f"{FULL}-secrets"]
    assert set(secret["stringData"]) == set(SECRETS)
    auth = by_kind(minimal, "Deployment")[f"{FULL}-auth-api"]["spec"]["template"]["spec"]["containers"][0]
    webhook = by_kind(minimal, "Deployment")[f"{FULL}-webhook-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert "AUTH_ENCRYPTION_KEYS" in {e["name"] for e in auth["env"]}
    # Least privilege: a service gets only its own keys.
    assert "AUTH_ENCRYPTION_KEYS" not in {e["name"] for e in webhook["env"]}
    assert "WEBHOOK_SECRET_KEYS" in {e["name"] for e in webhook["env"]}

    values = load_yaml(CHART / "ci" / "existing-secret-values.yaml")
    docs = render(values)
    assert not by_kind(docs, "Secret")
    for _name, _dep, c in containers(docs):
        refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e]
        assert refs
        assert set(refs) == {"novapulse-prod-secrets"}


def test_missing_secret_values_fail_with_a_clear_message() -> None:
    values = _minimal_values()
    del values["secrets"]["values"]["MONGO_URL"]
    with pytest.raises(helm.HelmError, match="MONGO_URL is required"):
        render(values)
    values = _minimal_values()
    del values["secrets"]["values"]["WEBHOOK_SECRET_KEYS"]
    with pytest.raises(helm.HelmError, match="WEBHOOK_SECRET_KEYS is required by the webhook service"):
        render(values)


def test_config_changes_roll_the_pods() -> None:
    a = by_kind(render(_minimal_values()), "Deployment")[f"{FULL}-auth-api"]
    values = _minimal_values()
    values["config"] = {"logLevel": "DEBUG"}
    b = by_kind(render(values), "Deployment")[f"{FULL}-auth-api"]
    before = a["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    after = b["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert before != after


def test_api_services_ingress_and_scaling(full: list[dict[str, Any]], minimal: list[dict[str, Any]]) -> None:
    services = by_kind(full, "Service")
    deployments = by_kind(full, "Deployment")
    ingress = next(iter(by_kind(full, "Ingress").values()))
    paths = {p["path"]: p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    expected = {prefix for _port, prefix in SUITE.values()}
    if "console" in present_services():
        # the console takes every other path; other /api/v1 paths (probes, metrics) go to a Service with no
        # endpoints, never to the console
        expected |= {"/", "/api/v1"}
        assert paths["/"]["backend"]["service"] == {"name": f"{FULL}-console-api", "port": {"name": "http"}}
        assert paths["/"]["pathType"] == paths["/api/v1"]["pathType"] == "Prefix"
        unrouted = services[paths["/api/v1"]["backend"]["service"]["name"]]
        assert "selector" not in unrouted["spec"]
    assert set(paths) == expected
    for service, (port, prefix) in SUITE.items():
        svc = services[f"{FULL}-{service}-api"]
        assert svc["spec"]["ports"][0]["port"] == port
        pods = deployments[f"{FULL}-{service}-api"]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pods.items()
        backend = paths[prefix]["backend"]["service"]
        assert paths[prefix]["pathType"] == "Prefix"
        assert backend == {"name": f"{FULL}-{service}-api", "port": {"name": "http"}}
    # HPA on: replicas left to the autoscaler; HPA off: the Deployment names its replicas.
    hpas = by_kind(full, "HorizontalPodAutoscaler")
    assert f"{FULL}-webhook-worker" in hpas
    assert f"{FULL}-auth-worker" not in hpas
    assert hpas[f"{FULL}-webhook-worker"]["spec"]["minReplicas"] == 2
    assert "replicas" not in deployments[f"{FULL}-auth-api"]["spec"]
    assert deployments[f"{FULL}-auth-worker"]["spec"]["replicas"] == 1
    assert not by_kind(minimal, "HorizontalPodAutoscaler")
    assert by_kind(minimal, "Deployment")[f"{FULL}-auth-api"]["spec"]["replicas"] == 2
    pdbs = by_kind(full, "PodDisruptionBudget")
    assert set(pdbs) == set(deployments)
    assert set(hpas) <= set(deployments)
    for name, pdb in pdbs.items():
        pods = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pods.items()


def test_monitoring_objects(full: list[dict[str, Any]], minimal: list[dict[str, Any]]) -> None:
    assert not [d for d in minimal if d["kind"] in CRD_KINDS]
    monitor = next(iter(by_kind(full, "ServiceMonitor").values()))
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == METRICS_PATH
    assert endpoint["port"] == "http"
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["job"]["replacement"] == "novapulse"
    assert relabel["service"]["sourceLabels"] == ["__meta_kubernetes_service_label_novapulse_io_service"]
    assert relabel["role"]["sourceLabels"] == ["__meta_kubernetes_service_label_app_kubernetes_io_component"]
    # Every process (api and worker) sits behind a Service the monitor selects.
    services = by_kind(full, "Service")
    for service, deployed in deployed_services().items():
        if "worker" not in deployed.roles:
            assert f"{FULL}-{service}-worker" not in services
        for role in deployed.roles:
            svc = services[f"{FULL}-{service}-{role}"]
            assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
            assert svc["metadata"]["labels"]["novapulse.io/service"] == service
            assert svc["metadata"]["labels"]["app.kubernetes.io/component"] == role
    rule = next(iter(by_kind(full, "PrometheusRule").values()))
    assert rule["spec"]["groups"] == load_yaml(RULES)["groups"]
    dashboards = [d for d in by_kind(full, "ConfigMap").values() if "grafana_dashboard" in d["metadata"]["labels"]]
    assert len(dashboards) == 2


def test_network_policies_admit_ingress_and_scrapes(full: list[dict[str, Any]]) -> None:
    policies = by_kind(full, "NetworkPolicy")
    api = policies[f"{FULL}-api"]["spec"]
    worker = policies[f"{FULL}-worker"]["spec"]
    deployed = deployed_services().values()
    assert {p["port"] for p in api["ingress"][0]["ports"]} == {d.port for d in deployed}
    assert {p["port"] for p in worker["ingress"][0]["ports"]} == {
        worker_port(d.port) for d in deployed if "worker" in d.roles
    }


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"services": {"auth": {"api": {"replica": 3}}}}, "replica"),
        ({"config": {"logLevel": "LOUD"}}, "logLevel"),
        ({"servces": {}}, "servces"),
        ({"services": {"auth": {"path": "/auth"}}}, "path"),
    ],
)
def test_values_schema_refuses_typos_and_bad_values(override: dict[str, Any], complaint: str) -> None:
    values = _minimal_values()
    values.update(override)
    with pytest.raises(helm.HelmError, match=complaint):
        render(values)
