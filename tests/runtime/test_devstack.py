"""`make run`'s stack: embedded Redis and MongoDB-wire servers, every service's API and worker healthy,
and everything stopped cleanly on SIGTERM."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from novapulse_runtime.devservers import port_open
from novapulse_runtime.devstack import discover

pytestmark = pytest.mark.e2e


def test_stack_starts_healthy_and_stops(tmp_path: Path) -> None:
    specs = discover()
    assert specs, "no service is installed: make run would have nothing to run"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MONGO_URL")}
    offset = random.randrange(20000, 40000)
    env["NOVAPULSE_PORT_OFFSET"] = str(offset)
    proc = subprocess.Popen(
        [sys.executable, "-m", "novapulse_runtime.devstack", "--data-dir", str(tmp_path / "data")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "all started" in line:
                break
        output = "".join(lines)
        assert "all started" in output, output
        urls = re.findall(r"(http://127\.0\.0\.1:\d+)\s+ready", output)
        assert len(urls) == 2 * len(specs), output
        for url in urls:
            for path in ("/api/v1/health", "/api/v1/health/live", "/api/v1/health/ready", "/api/v1/metrics"):
                with urllib.request.urlopen(url + path, timeout=5) as resp:  # noqa: S310
                    assert resp.status == 200, (url, path)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, output + rest
        assert "stopped" in rest
        for url in urls:
            assert not port_open(int(url.rsplit(":", 1)[1]))
        assert (tmp_path / "data" / "mongo").is_dir()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
