"""``make bench-scale`` at a tiny scale: the same command (``python -m bench.scale``) with two shapes, 1x1 and
2x1, for 3 s each at 4 clients: the stack starts behind the real gateway, the mixed load runs, every
accepted event reaches the receiver, and the summary line parses. No figure is asserted (the machine is
shared); only that nothing failed and nothing was lost."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from novapulse_devkit.gateway import nginx_binary
from tests.runtime.test_devstack import ROOT, _caller_env

SUMMARY = re.compile(
    r"^scale-bench: rps_1x=(?P<rps1>\d+\.\d) rps_2x=(?P<rps2>\d+\.\d) scaling=(?P<scaling>\d+\.\d\d) "
    r"errors=(?P<errors>\d+) lost=(?P<lost>\d+)$"
)
ROUTES = (
    "POST /auth/register",
    "POST /auth/login",
    "POST /webhooks/endpoints",
    "PATCH /webhooks/endpoints/{id}",
    "DELETE /webhooks/endpoints/{id}",
    "POST /webhooks/events",
)


@pytest.mark.e2e
def test_scale_bench_at_tiny_scale_prints_its_line_with_no_error_and_no_event_lost() -> None:
    if nginx_binary() is None:
        pytest.skip("nginx not installed (make deploy-tools as root; Debian: apt-get install -y nginx)")
    argv = [sys.executable, "-m", "bench.scale", "--seconds", "3", "--concurrency", "4", "--seeds", "2"]
    argv += ["--shapes", "1x1,2x1", "--drain", "30"]
    out = subprocess.run(argv, env=_caller_env(), cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    found = SUMMARY.match(lines[-1])
    assert found, lines[-1]
    assert (found["errors"], found["lost"]) == ("0", "0"), out.stdout
    assert float(found["rps1"]) > 0
    assert float(found["rps2"]) > 0
    assert "load average at start" in lines[0]
    assert any(line.startswith("load average at end") for line in lines)
    assert any("== 2x1: 2 api + 1 worker processes per service" in line for line in lines)
    for route in ROUTES:  # every route of the mix ran in both shapes
        assert sum(1 for line in lines if line.strip().startswith(route + " ")) == 2, (route, out.stdout)
    accepted = [int(m[1]) for m in re.finditer(r"events accepted (\d+), lost 0", out.stdout)]
    assert len(accepted) == 2, out.stdout
    assert all(n > 0 for n in accepted), out.stdout
