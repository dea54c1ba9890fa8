"""The system under load: ``make run``'s own stack (:class:`novapulse_devkit.stack.DevStack`) with N api and
M worker processes per service behind the production nginx gateway, plus the webhook receiver.

Only the services the load touches run (auth, webhook): registrations with e-mail verification off need no
notification worker and so no mail catcher. Each shape gets a fresh data directory (fresh Redis and
MongoDB-wire data) and the same port offset.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from novapulse_devkit.gateway import GATEWAY_PORT, nginx_binary
from novapulse_devkit.servers import free_port, port_open
from novapulse_devkit.stack import DevStack, StopRequests, check_ports, discover
from novapulse_runtime.process import ServiceSpec

from .receiver import start_receiver

SERVICES = ("auth", "webhook")
BENCH_ENV: Mapping[str, str] = {
    # accounts are created by POST /register alone (201), as with verification off: no mail in the loop
    "REGISTRATION_EMAIL_VERIFICATION": "false",
    # the load comes from one address: the per-client limits of auth are raised, not turned off (the
    # limiter's Redis script still runs on every request); the webhook service's per-organisation limits
    # stay as shipped and their 429s are counted apart
    "LOGIN_IP_LIMIT": "1000000",
    "REGISTER_IP_LIMIT": "1000000",
    "LOG_LEVEL": "WARNING",
    "SHUTDOWN_TIMEOUT": "10",
}
"""Environment of every service process of the benchmark (over ``make run``'s development defaults)."""
READY_TIMEOUT = 60.0


class ClusterError(Exception):
    """The stack did not come up (the message names the process and its log)."""


@dataclass
class Cluster:
    gateway: str
    """The gateway's base URL (no trailing slash): every request of the load goes here."""
    receiver: str
    """The webhook receiver's base URL."""
    pids: dict[str, list[int]]
    """Process kind (``nginx``, ``redis``, ``mongo-wire``, ``receiver``, ``auth-api``...) → its pids."""


def pick_offset(apis: int, workers: int) -> int:
    """``SCALE_BENCH_PORT_OFFSET``, else a random offset (1000-5699, below the ephemeral port range) whose
    gateway, api and worker ports are all free now (other stacks share this machine)."""
    raw = os.environ.get("SCALE_BENCH_PORT_OFFSET", "").strip()
    if raw:
        return int(raw)
    specs = _specs()
    for _ in range(50):
        offset = random.randrange(1000, 5700)
        probe = DevStack(
            Path("."), specs, offset, {}, StopRequests(block=False), nginx="nginx", apis=apis, workers=workers
        )
        if not probe.busy_service_ports() and not port_open(GATEWAY_PORT + offset):
            return offset
    raise ClusterError("no free port offset found")


def _specs() -> list[ServiceSpec]:
    specs = [spec for spec in discover() if spec.name in SERVICES]
    missing = set(SERVICES) - {spec.name for spec in specs}
    if missing:
        raise ClusterError(f"services not installed: {', '.join(sorted(missing))}")
    return specs


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - a local URL we built
            return int(resp.status)
    except OSError:
        return 0


@contextmanager
def cluster(apis: int, workers: int, offset: int, extra_env: Mapping[str, str] | None = None) -> Iterator[Cluster]:
    """Start Redis, nx-27017, the receiver, nginx (``deploy/nginx/nginx.conf`` with an ``upstream`` block of
    ``apis`` servers per service, keepalive) and ``apis`` api + ``workers`` worker processes of auth and
    webhook; yield once every process is ready and the gateway routes to auth; stop everything after.

    :raises ClusterError: no nginx, or a process did not start (its log is named).
    """
    nginx = nginx_binary(os.environ.get("NOVAPULSE_NGINX", ""))
    if nginx is None:
        raise ClusterError("no nginx (make deploy-tools as root; Debian: apt-get install -y nginx)")
    caller = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "MONGO_URL", "NOVAPULSE_"))}
    caller.update(BENCH_ENV)
    caller.update(extra_env or {})
    recv_port = free_port()
    receiver = start_receiver(recv_port)  # before StopRequests: a spawned child would inherit the blocked mask
    with tempfile.TemporaryDirectory(prefix=f"scale-bench-{apis}x{workers}-") as tmp:
        signals = StopRequests()
        stack = DevStack(
            Path(tmp), _specs(), offset, caller, signals, nginx=nginx, apis=apis, workers=workers, upstream_groups=True
        )
        try:
            check_ports(stack.plan(), offset)
            stack.logs.mkdir(parents=True)
            urls = stack.start_servers()
            stack.start_gateway()
            if stack.failed:
                raise ClusterError(f"the gateway did not start; see {stack.logs / 'gateway.log'}")
            stack.start_services(urls)
            stack.wait_ready()
            if stack.failed or signals.stopping:
                raise ClusterError("a process did not start (above)")
            gateway = f"http://127.0.0.1:{stack.gateway_port}"
            deadline = time.monotonic() + READY_TIMEOUT
            jwks = f"{gateway}/api/v1/auth/.well-known/jwks.json"
            while _get(jwks) != 200 or not port_open(recv_port):
                if time.monotonic() > deadline:
                    raise ClusterError(f"the gateway does not reach auth, or the receiver is down ({jwks})")
                time.sleep(0.1)
            signals.release()  # Ctrl-C during the load interrupts it; everything is stopped below
            pids: dict[str, list[int]] = {"receiver": [receiver.pid or 0]}
            names = {"gateway": "nginx", "redis-server": "redis", "nx-27017": "mongo-wire"}
            for server in stack.servers:
                assert server.server.proc is not None
                pids.setdefault(names.get(server.label, server.label), []).append(server.server.proc.pid)
            for child in stack.children:
                service, _, name = child.label.partition("-")
                pids.setdefault(f"{service}-{name.split('-')[0]}", []).append(child.proc.pid)
            yield Cluster(gateway, f"http://127.0.0.1:{recv_port}", pids)
        finally:
            stack.stop()
            signals.release()
            receiver.terminate()
            receiver.join(10)
