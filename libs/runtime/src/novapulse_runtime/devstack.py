"""``make run``: the whole suite on one machine.

Starts Redis and a MongoDB-wire server when ``REDIS_URL`` / ``MONGO_URL`` are not set (data under
``.data/``), then the API and worker of every installed service (entry point group
``novapulse.services``), prints one line per process with its URL, and on Ctrl-C or SIGTERM stops them all.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from .constants import READY_PATH, WORKER_PORT_OFFSET
from .devservers import ServerProcess, free_port, mongo_server, port_open, redis_server
from .process import ServiceSpec

DEFAULT_REDIS_PORT = 6390
DEFAULT_MONGO_PORT = 27027
ENTRY_POINT_GROUP = "novapulse.services"


@dataclass
class Child:
    label: str
    url: str
    proc: subprocess.Popen[bytes]


def discover() -> list[ServiceSpec]:
    specs = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = ep.load()
        except Exception as exc:  # one broken service must not keep the others from running
            _say(f"cannot load service {ep.name} ({ep.value}): {exc!r}")
            continue
        if isinstance(spec, ServiceSpec):
            specs.append(spec)
    return sorted(specs, key=lambda s: _default_port(s))


def _default_port(spec: ServiceSpec) -> int:
    return int(spec.settings_cls.model_fields["http_port"].default)


def _pick(port: int) -> int:
    return port if not port_open(port) else free_port()


def _say(msg: str) -> None:
    print(f"[novapulse] {msg}", flush=True)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + READY_PATH, timeout=1) as resp:  # noqa: S310 - local URL we built
            return bool(resp.status == 200)
    except OSError:
        return False


def run(data_dir: Path, only: list[str] | None = None, port_offset: int = 0) -> int:
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    servers: list[ServerProcess] = []
    children: list[Child] = []
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        if not env.get("REDIS_URL"):
            port = _pick(DEFAULT_REDIS_PORT)
            servers.append(redis_server(port, data_dir / "redis", persist=True).start())
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            _say(f"redis      redis://127.0.0.1:{port}  (embedded, data in {data_dir / 'redis'})")
        if not env.get("MONGO_URL"):
            port = _pick(DEFAULT_MONGO_PORT)
            servers.append(mongo_server(port, data_dir / "mongo-run", data_dir=data_dir / "mongo").start())
            env["MONGO_URL"] = f"mongodb://127.0.0.1:{port}"
            _say(f"mongodb    mongodb://127.0.0.1:{port}  (embedded nx-27017, data in {data_dir / 'mongo'})")
        specs = [s for s in discover() if not only or s.name in only]
        if not specs:
            _say("no services installed (entry point group novapulse.services)")
            return 1
        for spec in specs:
            api_port = _default_port(spec) + port_offset
            for role, port in (("api", api_port), ("worker", api_port + WORKER_PORT_OFFSET)):
                child_env = dict(env)
                child_env.update(spec.dev_env)
                child_env.setdefault("HTTP_HOST", "127.0.0.1")
                child_env["HTTP_PORT"] = str(api_port)
                child_env["WORKER_HTTP_PORT"] = str(port)
                log_path = logs / f"{spec.name}-{role}.log"
                with open(log_path, "ab") as log:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", spec.package, role],
                        env=child_env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                url = f"http://127.0.0.1:{port}"
                children.append(Child(f"{spec.name}-{role}", url, proc))
        deadline = time.monotonic() + 60
        pending = list(children)
        while pending and not stopping and time.monotonic() < deadline:
            for child in list(pending):
                if child.proc.poll() is not None:
                    _say(f"{child.label:<22} EXITED {child.proc.returncode}; see {logs / (child.label + '.log')}")
                    pending.remove(child)
                elif _ready(child.url):
                    _say(f"{child.label:<22} {child.url}  ready  (logs: {logs / (child.label + '.log')})")
                    pending.remove(child)
            time.sleep(0.1)
        for child in pending:
            _say(f"{child.label:<22} {child.url}  NOT READY after 60s; see {logs / (child.label + '.log')}")
        if not stopping:
            _say("all started; Ctrl-C stops everything")
        reported: set[str] = set()
        while not stopping:
            for child in children:
                if child.proc.poll() is not None and child.label not in reported:
                    reported.add(child.label)
                    _say(f"{child.label} exited with {child.proc.returncode}; see its log")
            time.sleep(0.2)
        return 0
    finally:
        _say("stopping")
        for child in children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.proc.wait(40)
            except subprocess.TimeoutExpired:
                child.proc.kill()
        for server in reversed(servers):
            server.stop()
        _say("stopped")


def cli() -> None:
    parser = argparse.ArgumentParser(description="Run every NovaPulse service locally")
    parser.add_argument("--data-dir", default=os.environ.get("NOVAPULSE_DATA_DIR", ".data"))
    parser.add_argument("--only", nargs="*", help="service names to run (default: all)")
    parser.add_argument(
        "--port-offset",
        type=int,
        default=int(os.environ.get("NOVAPULSE_PORT_OFFSET", "0") or 0),
        help="added to every service port, to run a second stack beside the first",
    )
    args = parser.parse_args()
    if not 0 <= args.port_offset <= 50000:
        parser.error("--port-offset / NOVAPULSE_PORT_OFFSET must be 0-50000")
    sys.exit(run(Path(args.data_dir), args.only, args.port_offset))


if __name__ == "__main__":
    cli()
