"""Bad or missing configuration stops the process at start-up with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from novapulse_runtime.settings import ServiceSettings, load_settings

pytestmark = pytest.mark.unit


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MONGO_URL")}
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "tests.support.sample", "api"], env=base, capture_output=True, text=True, timeout=60
    )


GOOD = {"REDIS_URL": "redis://127.0.0.1:1/0", "MONGO_URL": "mongodb://127.0.0.1:1"}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MONGO_URL": GOOD["MONGO_URL"]}, "REDIS_URL"),
        ({"REDIS_URL": GOOD["REDIS_URL"]}, "MONGO_URL"),
        ({**GOOD, "REDIS_URL": "http://x"}, "REDIS_URL"),
        ({**GOOD, "REDIS_URL": "redis+sentinel://127.0.0.1:26379"}, "REDIS_URL"),
        ({**GOOD, "OUTBOX_REPLICA_ACKS": "-1"}, "OUTBOX_REPLICA_ACKS"),
        ({**GOOD, "OUTBOX_REPLICA_TIMEOUT_MS": "0"}, "OUTBOX_REPLICA_TIMEOUT_MS"),
        ({**GOOD, "HTTP_PORT": "seventy"}, "HTTP_PORT"),
        ({**GOOD, "HTTP_PORT": "70000"}, "HTTP_PORT"),
        ({**GOOD, "QUEUE_CONCURRENCY": "0"}, "QUEUE_CONCURRENCY"),
        ({**GOOD, "LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({**GOOD, "SHUTDOWN_TIMEOUT": "-1"}, "SHUTDOWN_TIMEOUT"),
        ({**GOOD, "TRUSTED_PROXIES": "10.0.0.0/8,not-a-net"}, "not-a-net"),
        ({**GOOD, "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({**GOOD, "RATE_LIMIT_IPV6_PREFIX": "16"}, "RATE_LIMIT_IPV6_PREFIX"),
        ({**GOOD, "RATE_LIMIT_IPV6_PREFIX": "129"}, "RATE_LIMIT_IPV6_PREFIX"),
        ({**GOOD, "EVENTS_NAMESPACE": "a:b"}, "EVENTS_NAMESPACE"),
        ({**GOOD, "EVENTS_NAMESPACE": "x" * 65}, "EVENTS_NAMESPACE"),
        ({**GOOD, "EVENTS_NAMESPACE": "events*"}, "EVENTS_NAMESPACE"),
        ({**GOOD, "OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        ({**GOOD, "OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({**GOOD, "TRACE_DATABASE_SPANS": "sometimes"}, "TRACE_DATABASE_SPANS"),
    ],
)
def test_bad_config_exits_with_one_clear_line(env: dict[str, str], variable: str) -> None:
    result = _start(env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("configuration error:")
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


def test_settings_parse_lists_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("MONGO_URL", "mongodb://m:27017")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, ::1")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    s = load_settings(ServiceSettings)
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    assert s.log_level == "DEBUG"
    assert s.database_name() == "novapulse_novapulse"
    assert s.listen_port("worker") == s.http_port + 1000
    assert s.events_namespace == "novapulse"


def test_events_namespace_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("MONGO_URL", "mongodb://m:27017")
    monkeypatch.setenv("EVENTS_NAMESPACE", "t-1.ns_2")
    assert load_settings(ServiceSettings).events_namespace == "t-1.ns_2"
