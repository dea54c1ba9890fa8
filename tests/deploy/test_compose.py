"""docker-compose.yml, checked against the Compose Specification and for its promises (every service's api
and worker, ports, healthchecks, healthy-dependency ordering, MongoDB replica set, shutdown timing). Docker
could not run where this was written, so no container was started by these tests."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
import yaml

from novapulse_runtime.constants import READY_PATH
from tests.deploy.support import (
    DEPLOY,
    ROOT,
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

COMPOSE = ROOT / "docker-compose.yml"
ROLES = ("api", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(COMPOSE)
    return doc


def _duration(text: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def test_every_service_has_an_api_and_a_worker_unless_it_has_none(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in deployed_services().items():
        for role in ROLES:
            if role in svc.roles:
                assert f"{name}-{role}" in services, f"{name}-{role} missing from docker-compose.yml"
            else:  # the console: its spec has no worker
                assert f"{name}-{role}" not in services, f"{name} has no {role}"


def test_services_not_written_yet_are_behind_a_profile(compose: dict[str, Any]) -> None:
    """`docker compose up` builds only services whose package exists; the others wait behind a profile."""
    present = set(present_services())
    for name, deployed in deployed_services().items():
        for role in deployed.roles:
            svc = compose["services"][f"{name}-{role}"]
            if name in present:
                assert "profiles" not in svc, f"{name}-{role} exists and must start by default"
            else:
                assert svc.get("profiles") == [name], f"{name}-{role} has no package yet: put it behind a profile"


def test_containers_build_from_the_shared_dockerfile_with_the_right_ports(compose: dict[str, Any]) -> None:
    for name, deployed in deployed_services().items():
        port = deployed.port
        for role in deployed.roles:
            svc = compose["services"][f"{name}-{role}"]
            assert svc["build"] == {
                "context": ".",
                "dockerfile": "deploy/docker/Dockerfile",
                "args": {"SERVICE": name},
            }
            assert svc["image"].startswith(f"novapulse/{name}:")
            assert svc["command"] == [role]
            env = svc["environment"]
            assert env["SERVICE_NAME"] == name
            assert env["HTTP_PORT"] == str(port)
            assert env["WORKER_HTTP_PORT"] == str(worker_port(port))
            if deployed.database:
                assert env["MONGO_DB"] == f"novapulse_{name}"
            else:  # no database (the console): no MongoDB URL, no database name
                assert env["MONGO_URL"] == ""
                assert "MONGO_DB" not in env
            listen = port if role == "api" else worker_port(port)
            assert svc["expose"] == [str(listen)]
            check = " ".join(svc["healthcheck"]["test"])
            assert f"http://127.0.0.1:{listen}{READY_PATH}" in check, f"{name}-{role} healthcheck"


def test_environment_covers_every_setting(compose: dict[str, Any]) -> None:
    specs = service_specs()
    for name, deployed in deployed_services().items():
        for role in deployed.roles:
            env = compose["services"][f"{name}-{role}"]["environment"]
            common = common_env_vars() - (set() if deployed.database else {"MONGO_DB"})  # no database: no name
            assert common <= set(env), sorted(common - set(env))
            if name in specs:
                needed = required_env_vars(specs[name].settings_cls)
                assert needed <= set(env), f"{name}-{role} lacks {sorted(needed - set(env))}"
            for key, value in env.items():
                if key.endswith("_KEYS"):  # secrets come from .env, never a default in the file
                    assert re.fullmatch(r"\$\{" + key + r":\?[^}]+\}", str(value)), f"{name}: {key}={value}"


def test_dependencies_wait_for_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, deployed in deployed_services().items():
        for role in deployed.roles:
            deps = services[f"{name}-{role}"]["depends_on"]
            for infra in ("mongo", "redis") if deployed.database else ("redis",):
                assert deps[infra] == {"condition": "service_healthy"}, f"{name}-{role} -> {infra}"
            if not deployed.database:
                assert "mongo" not in deps, f"{name} owns no database"
    assert services["notification-worker"]["depends_on"]["mailpit"] == {"condition": "service_healthy"}
    gateway = services["gateway"]["depends_on"]
    for name in present_services():
        assert gateway[f"{name}-api"] == {"condition": "service_healthy"}
    # Every dependency named exists and has a healthcheck to wait for.
    for svc in services.values():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services
            assert cond["condition"] == "service_healthy"
            assert "healthcheck" in services[dep], dep


def test_mongodb_is_a_replica_set_that_initiates_itself(compose: dict[str, Any]) -> None:
    mongo = compose["services"]["mongo"]
    assert mongo["image"].startswith("mongo:")
    replset = mongo["command"][mongo["command"].index("--replSet") + 1]
    check = " ".join(mongo["healthcheck"]["test"])
    assert "rs.initiate(" in check
    assert f'_id: "{replset}"' in check
    assert "isWritablePrimary" in check
    url = compose["x-service-env"]["MONGO_URL"]
    assert f"replicaSet={replset}" in url
    redis = compose["services"]["redis"]
    assert re.match(r"redis:7(\.|-|$)", redis["image"])
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_shutdown_and_hardening(compose: dict[str, Any]) -> None:
    for name, deployed in deployed_services().items():
        for role in deployed.roles:
            svc = compose["services"][f"{name}-{role}"]
            shutdown = float(svc["environment"]["SHUTDOWN_TIMEOUT"])
            assert _duration(svc["stop_grace_period"]) > shutdown, f"{name}-{role}: SIGKILL before the drain ends"
            assert svc["read_only"] is True
            assert not str(svc["user"]).startswith("0")
            assert svc["cap_drop"] == ["ALL"]
            assert any(t.startswith("/tmp") for t in svc["tmpfs"])


def test_the_gateway_and_the_console_are_the_only_trusted_proxies(compose: dict[str, Any]) -> None:
    """The console calls the services for the browser and forwards its X-Forwarded-For: the services trust
    it and the gateway, by fixed address, and nobody else."""
    gateway = compose["services"]["gateway"]
    addresses = [gateway["networks"]["novapulse"]["ipv4_address"]]
    if "console" in present_services():
        addresses.append(compose["services"]["console-api"]["networks"]["novapulse"]["ipv4_address"])
    assert compose["x-service-env"]["TRUSTED_PROXIES"] == ",".join(f"{a}/32" for a in addresses)
    assert gateway["ports"] == ["127.0.0.1:${GATEWAY_PORT:-8080}:8080"]


def test_the_console_is_behind_the_gateway_and_calls_the_services_by_their_names(compose: dict[str, Any]) -> None:
    if "console" not in present_services():
        pytest.skip("no console in this checkout")
    services = compose["services"]
    console = services["console-api"]
    assert services["gateway"]["depends_on"]["console-api"] == {"condition": "service_healthy"}
    assert "ports" not in console, "reached through the gateway only"
    env = console["environment"]
    for name, (port, _prefix) in SUITE.items():
        assert env[f"{name.upper()}_API_URL"] == f"http://{name}-api:{port}"
    assert env["REDIS_URL"] == "redis://console:${REDIS_PASSWORD_CONSOLE}@redis:6379/0"
    assert env["OPERATIONS_TOKEN"] == "${OPERATIONS_TOKEN:-}"  # the services' own token
    upstreams = (DEPLOY / "nginx" / "upstreams.conf").read_text(encoding="utf-8")
    assert re.search(r"^\s*console\s+console-api:8100;", upstreams, flags=re.M)


def test_bind_mounts_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    assert (DEPLOY / "compose.env.example").is_file()


def test_env_example_names_every_required_variable() -> None:
    text = (DEPLOY / "compose.env.example").read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text(encoding="utf-8")))
    assert required, "compose requires no variables?"
    for var in required:
        assert re.search(rf"^{var}=", text, flags=re.M), f"{var} not in deploy/compose.env.example"


TEST_ENV = {
    "AUTH_ENCRYPTION_KEYS": "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=",
    "WEBHOOK_SECRET_KEYS": "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=",
    "REPORT_DOWNLOAD_SECRET": "not-a-real-secret-but-long-enough-0123456789",
    "CONSOLE_SESSION_KEYS": "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=",
    "GRAFANA_ADMIN_PASSWORD": "not-a-secret",
    **{
        f"REDIS_PASSWORD_{u}": f"not-a-secret-{u.lower()}"
        for u in ("ADMIN", "AUTH", "WEBHOOK", "NOTIFICATION", "WORKFLOW", "REPORT", "CONSOLE")
    },
}
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution for the forms the file uses: ${VAR}, ${VAR:-default}, ${VAR:?error}."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name, "")
        if op == ":?" and not value:
            raise ValueError(f"{name}: {arg}")
        if op == ":-" and not value:
            return arg
        return value

    result = _VARIABLE.sub(one, text)
    assert "${" not in result, "a variable form this test does not interpolate"
    return result


def _spec_parse(doc: dict[str, Any]) -> Any:
    compose_spec = require_module("compose_spec")
    return compose_spec.PyCompose.from_json(json.dumps(doc))


def test_file_matches_the_compose_specification() -> None:
    """The Compose Specification's own types (PyPI compose-spec): unknown keys, wrong types, bad durations
    and unknown depends_on conditions are refused."""
    doc = yaml.safe_load(interpolate(COMPOSE.read_text(encoding="utf-8"), TEST_ENV))
    parsed = _spec_parse(doc)
    assert sorted(parsed.service_names()) == sorted(doc["services"])


def test_the_specification_check_is_real(compose: dict[str, Any]) -> None:
    doc = yaml.safe_load(interpolate(COMPOSE.read_text(encoding="utf-8"), TEST_ENV))
    broken = copy.deepcopy(doc)
    broken["services"]["auth-api"]["depends_on"]["mongo"]["condition"] = "service_healty"
    with pytest.raises(ValueError, match="service_healty"):
        _spec_parse(broken)
    broken = copy.deepcopy(doc)
    broken["services"]["auth-api"]["stop_grace_periode"] = "35s"
    with pytest.raises(ValueError, match="stop_grace_periode"):
        _spec_parse(broken)


def test_secrets_must_be_supplied() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    for missing in TEST_ENV:
        env = {k: v for k, v in TEST_ENV.items() if k != missing}
        with pytest.raises(ValueError, match=missing):
            interpolate(text, env)
