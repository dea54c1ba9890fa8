"""``novapulse_devkit.servers.cpu_seconds``: the benchmarks' CPU cost of another process."""

from __future__ import annotations

import math
import subprocess
import sys

from novapulse_devkit.servers import cpu_seconds

_BURN = (
    "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    "print('done', flush=True)\ninput()"
)


def test_cpu_seconds_counts_another_process_and_is_nan_once_it_is_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "done"
        used = cpu_seconds(proc.pid)
        assert used >= 0.3  # its own busy loop, start-up on top
        assert cpu_seconds(proc.pid) >= used  # monotonic
    finally:
        proc.communicate("\n", timeout=10)
    assert math.isnan(cpu_seconds(proc.pid))  # reaped: no such process
    assert math.isnan(cpu_seconds(None))
