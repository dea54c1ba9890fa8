"""``make run``: the whole suite on one machine.

Starts Redis and a MongoDB-wire server when ``REDIS_URL`` / ``MONGO_URL`` are not set (data under
``NOVAPULSE_DATA_DIR``, default ``.data/``), then the API and worker of every installed service (entry point
group ``novapulse.services``), and prints one line per process with its URL, pid and log file.

Gateway: when nginx is installed (``nginx`` on ``PATH`` or in /usr/sbin), the production gateway config
(deploy/nginx/nginx.conf) runs in front of everything on port 8080: ``/`` is the console, ``/api/v1/<prefix>/``
each service (:mod:`.gateway`; config, scratch files and pid under ``<data dir>/gateway/``, log in
``logs/gateway.log``). The first thing printed is the URL to open: the gateway's, or without nginx the
console's own (one line says why). Links in mails (``{public}`` in :data:`DEV_ENV`) point at that URL too.
``NOVAPULSE_NGINX``: the nginx program to use, or ``off`` for no gateway.

Ports: every port of the stack, and every value derived from one, moves by ``NOVAPULSE_PORT_OFFSET``: the
embedded servers, each API (``HTTP_PORT``) and worker (``WORKER_HTTP_PORT``), every settings default that is
a loopback URL with a port (``AUTH_JWKS_URL``, ``INVITE_ACCEPT_URL``, ``PUBLIC_BASE_URL``...), and
``{port:N}`` in a service's :data:`DEV_ENV` (``N + offset``; ``{data_dir}`` is the stack's data directory).

Environment: the caller's environment wins over every development default (:data:`DEV_ENV`, shifted URLs,
``HTTP_HOST``); only ``HTTP_PORT`` / ``WORKER_HTTP_PORT`` belong to the stack (one per process).

Signals: children run in their own sessions, so a terminal's Ctrl-C reaches only this runner, which sends
each child one SIGTERM and waits for every drain (exit 0). A second Ctrl-C / SIGTERM forces: each child gets
its second signal (the runtime's "exit at once"), SIGKILL after a short grace, exit 130. ``make`` forwards
the SIGTERM it receives to this runner: that copy of a stop already under way is not a second request
(:class:`StopRequests`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from novapulse_runtime.constants import CONFIG_ERROR_EXIT, FORCED_EXIT, READY_PATH, WORKER_PORT_OFFSET
from novapulse_runtime.process import ServiceSpec

from .gateway import GATEWAY_PORT, GatewayConfigError, gateway_config, gateway_server, nginx_binary
from .servers import (
    STOP_SIGNALS,
    ServerProcess,
    child_setup,
    describe_exit,
    free_port,
    mongo_server,
    port_open,
    redis_server,
)

DEFAULT_REDIS_PORT = 6390
DEFAULT_MONGO_PORT = 27027
ENTRY_POINT_GROUP = "novapulse.services"
MAX_PORT = 65535
STARTUP_TIMEOUT = 60.0
"""Seconds every process gets to report ready."""
DEFAULT_SHUTDOWN_TIMEOUT = 25.0
DRAIN_MARGIN = 15.0
"""Seconds a child gets beyond its ``SHUTDOWN_TIMEOUT`` to exit after SIGTERM before it is killed."""
FORCE_GRACE = 5.0
"""Seconds between the forced stop (second signal) and SIGKILL."""
DEV_OPERATIONS_TOKEN = "development-only-operations-token-0123456789"  # noqa: S105 - dev only
"""``OPERATIONS_TOKEN`` of every process of ``make run`` (the console's event-bus pages call the services with
it); at least 32 characters, as the runtime requires."""
DEV_OPERATOR_EMAIL = "operator@example.com"
"""The console's ``CONSOLE_OPERATOR_EMAILS`` in ``make run``: register this address to see the operator pages."""
DEV_ENV_ALL: Mapping[str, str] = {
    "OPERATIONS_TOKEN": DEV_OPERATIONS_TOKEN,
    # the gateway and the console reach the services from loopback: their X-Forwarded-For is believed
    # (only from loopback: every other peer's header is ignored)
    "TRUSTED_PROXIES": "127.0.0.0/8,::1/128",
}
"""Development-only environment of every service's processes (before :data:`DEV_ENV` and the caller's)."""
DEV_ENV: Mapping[str, Mapping[str, str]] = {
    # a fixed key so the local database stays readable across restarts; mailed links open the console's
    # pages ({public}: the gateway, or the console itself without nginx)
    "auth": {
        "AUTH_ENCRYPTION_KEYS": "z1C65EF0K1fn-djyWZoFI3NpRzw0eprb7cWRvGWQMiU=",
        "REGISTRATION_VERIFY_URL": "{public}/register/verify",
        "INVITE_ACCEPT_URL": "{public}/invites/accept",
    },
    # a fixed key, and the loopback range opened so local receivers work
    "webhook": {
        "WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_SECRET_KEYS": "ZGV2LW9ubHktd2ViaG9vay1rZXktZG8tbm90LXVzZSE=",
    },
    # the catcher keeps its mail under the stack's data dir and moves with NOVAPULSE_PORT_OFFSET; the links
    # in mails (verification, invitation, webhook notices, report downloads) open the console / gateway
    "notification": {
        "MAIL_CATCHER_DIR": "{data_dir}/mail",
        "MAIL_CATCHER_PORT": "{port:1025}",
        "PUBLIC_BASE_URL": "{public}",
        "INVITE_ACCEPT_PATH": "/invites/accept",
    },
    # fixed keys so a signed-in browser stays signed in across restarts; plain-HTTP loopback cookies; the
    # documented operator address
    "console": {
        "CONSOLE_SESSION_KEYS": "bm92YXB1bHNlLWRldi1vbmx5LWNvbnNvbGUta2V5ISE=",
        "CONSOLE_COOKIE_SECURE": "false",
        "CONSOLE_OPERATOR_EMAILS": DEV_OPERATOR_EMAIL,
    },
    # a fixed key for the download links, so links stay valid across restarts
    "report": {"REPORT_DOWNLOAD_SECRET": "development-only-report-link-secret-0123456789"},
}
"""Development-only environment ``make run`` gives each service's processes, by service name (before the
caller's environment, which wins). Production packages carry none of it. ``{data_dir}``: the stack's data
directory; ``{port:N}``: port N moved by the offset; ``{public}``: the URL people open (:func:`public_url`)."""
CONSOLE_PORT = 8100
INSTANCE_PORT_STEP = 20
"""Ports between one service's api (or worker) processes when it runs several (``--apis``, ``--workers``):
the services' defaults are 8100-8105, so 20 keeps every instance of every service apart."""
MAX_INSTANCES = 40
"""Most processes of one kind per service: 40 x 20 ports stays within the 1000 between api and worker ports."""

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
STACK_OWNED = ("HTTP_PORT", "WORKER_HTTP_PORT")
"""Variables the stack sets per process whatever the caller's environment says (one value cannot serve
every service)."""
_SI_USER = 0  # si_code of a signal sent with kill()


class StackError(Exception):
    """A reason the stack cannot start, printed as one line."""


class ConfigError(StackError):
    """Bad input from the caller: one line, exit status 2."""


@dataclass
class Child:
    label: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    ready: bool = False
    reported: bool = False


@dataclass
class Server:
    label: str
    url: str
    server: ServerProcess
    log_path: Path
    reported: bool = False


class StopRequests:
    """Stop signals taken synchronously (``sigtimedwait``) so the sender is known.

    The first SIGINT/SIGTERM/SIGHUP asks for a graceful stop, the next one forces. One exception: ``make``
    forwards the SIGTERM it gets to its child, so ``kill -TERM -<group>`` of ``make run`` reaches the runner
    twice, from the killer and then from the parent. After a SIGTERM from anyone but the parent, one
    SIGTERM from the parent is that copy of the same request, not a second one.

    ``block=False``: take no signal (a stack that is only planned, :meth:`DevStack.plan`)."""

    def __init__(self, block: bool = True) -> None:
        self.count = 0
        self.parent = os.getppid()
        self.copy_expected = False
        if block:
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    @property
    def stopping(self) -> bool:
        return self.count >= 1

    @property
    def forced(self) -> bool:
        return self.count >= 2

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds, or until a stop signal arrives."""
        info = signal.sigtimedwait(STOP_SIGNALS, max(timeout, 0.0))
        if info is None:
            return
        from_parent = info.si_code == _SI_USER and self.parent > 1 and info.si_pid == self.parent
        is_term = info.si_signo == signal.SIGTERM
        if self.copy_expected and from_parent and is_term:
            self.copy_expected = False
            return
        self.count += 1
        if self.count == 1:
            self.copy_expected = is_term and not from_parent
        elif self.count == 2:
            _say("second signal: forcing every process to stop")

    def release(self) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class _PortShift:
    """``"{port:1025}".format(port=_PortShift(4700))`` → ``"5725"``; remembers every port it handed out."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.ports: list[int] = []

    def __format__(self, spec: str) -> str:
        if not spec.isdigit():
            raise ValueError(f"{{port:{spec}}}: give a port number")
        port = int(spec) + self.offset
        self.ports.append(port)
        return str(port)


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


def roles(spec: ServiceSpec, api_port: int, apis: int = 1, workers: int = 1) -> list[tuple[str, int]]:
    """The processes ``make run`` starts for ``spec``, as (name, port): ``api`` always, ``worker`` when it has
    workers. With ``apis`` / ``workers`` above 1 (``--apis`` / ``--workers``), the extra processes are
    ``api-2``, ``worker-2``... each :data:`INSTANCE_PORT_STEP` ports above the previous one (the first keeps
    the default port). :func:`role_of` gives a name's role (the command line's ``api`` / ``worker``)."""
    found = [(_instance("api", i), api_port + INSTANCE_PORT_STEP * i) for i in range(apis)]
    if spec.worker is not None:
        worker = api_port + WORKER_PORT_OFFSET
        found += [(_instance("worker", i), worker + INSTANCE_PORT_STEP * i) for i in range(workers)]
    return found


def _instance(role: str, index: int) -> str:
    return role if index == 0 else f"{role}-{index + 1}"


def role_of(name: str) -> str:
    """``api-2`` → ``api``: the role (process kind) of a process name from :func:`roles`."""
    return name.split("-", 1)[0]


def parse_port_offset(raw: str) -> int:
    """``NOVAPULSE_PORT_OFFSET``: empty → 0; a whole number ≥ 0, else :class:`ConfigError`. Whether the
    shifted ports fit under 65535 is checked once they are all known (:func:`check_ports`)."""
    text = raw.strip()
    if not text:
        return 0
    if not text.isdigit() or not text.isascii():
        raise ConfigError(f"NOVAPULSE_PORT_OFFSET: must be a whole number >= 0, got {raw!r}")
    return int(text)


def shift_loopback_url(url: str, offset: int) -> str:
    """``http://127.0.0.1:8101/x`` → ``http://127.0.0.1:<8101+offset>/x``; anything else unchanged."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    if not offset or port is None or parts.hostname not in LOOPBACK_HOSTS:
        return url
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return urlunsplit(parts._replace(netloc=f"{host}:{port + offset}"))


def shifted_defaults(spec: ServiceSpec, offset: int) -> dict[str, str]:
    """Every settings default of ``spec`` that is a loopback URL with a port, moved by ``offset``."""
    out: dict[str, str] = {}
    for name, info in spec.settings_cls.model_fields.items():
        if isinstance(info.default, str):
            moved = shift_loopback_url(info.default, offset)
            if moved != info.default:
                out[name.upper()] = moved
    return out


def public_url(offset: int, gateway: bool) -> str:
    """The URL people open (no trailing slash): the gateway's, or without it the console's own."""
    return f"http://127.0.0.1:{(GATEWAY_PORT if gateway else CONSOLE_PORT) + offset}"


def dev_defaults(
    spec: ServiceSpec, offset: int, data_dir: Path, ports: _PortShift, public: str | None = None
) -> dict[str, str]:
    """The development defaults of one service's processes, before the caller's environment. ``public``:
    the URL people open (default: the gateway's, :func:`public_url`)."""
    env = {"PYTHONUNBUFFERED": "1", "HTTP_HOST": "127.0.0.1"}
    env.update(shifted_defaults(spec, offset))
    public = public_url(offset, gateway=True) if public is None else public
    for key, value in {**DEV_ENV_ALL, **DEV_ENV.get(spec.name, {})}.items():
        try:
            env[key] = value.format(data_dir=str(data_dir), port=ports, public=public)
        except (KeyError, IndexError, ValueError) as exc:
            raise StackError(f"{spec.name}: dev_env {key}={value!r}: {exc}") from None
    return env


def process_env(defaults: Mapping[str, str], caller: Mapping[str, str], stack: Mapping[str, str]) -> dict[str, str]:
    """Development ``defaults`` < the ``caller``'s environment < the ``stack``'s own values. Names are
    compared without case (settings are read case-insensitively), and a caller's empty value counts: it
    tightens (``WEBHOOK_ALLOWED_CIDRS=``) like any other."""
    given = {k.upper() for k in caller}
    owned = {k.upper() for k in stack}
    env = {k: v for k, v in defaults.items() if k.upper() not in given}
    env.update({k: v for k, v in caller.items() if k.upper() not in owned})
    env.update(stack)
    return env


def check_ports(ports: Iterable[tuple[str, int]], offset: int) -> None:
    """Every port of the stack must fit under 65535: else one line naming the first that does not."""
    for label, port in ports:
        if port > MAX_PORT:
            raise ConfigError(
                f"NOVAPULSE_PORT_OFFSET: {offset} moves {label} to port {port} (over {MAX_PORT}); "
                f"the largest offset is {offset - (port - MAX_PORT)}"
            )


def _say(msg: str) -> None:
    # The terminal may be gone (SIGHUP) or the reader of a pipe may have quit: stopping must go on.
    with contextlib.suppress(OSError):
        print(f"[novapulse] {msg}", flush=True)


def _ready(url: str) -> bool:
    """Whether the process at ``url`` answers its readiness probe with 200. Any other answer — no listener,
    a garbled status line (a probe to a port in the ephemeral range can connect to itself before the service
    binds it: TCP simultaneous open), a timeout — is "not yet", never an exception."""
    try:
        with urllib.request.urlopen(url + READY_PATH, timeout=1) as resp:  # noqa: S310 - local URL we built
            return bool(resp.status == 200)
    except (OSError, http.client.HTTPException, ValueError):
        return False


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return ""


def _lock(data_dir: Path) -> IO[str]:
    """One stack per data directory (two would share the database files): an advisory lock the kernel
    drops when the process dies, so it is never stale."""
    handle = open(data_dir / ".stack.lock", "a+")  # noqa: SIM115 - held for the runner's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise StackError(
            f"{data_dir} is used by another make run (pid {owner}); stop it or set NOVAPULSE_DATA_DIR"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


@dataclass
class DevStack:
    data_dir: Path
    specs: list[ServiceSpec]
    offset: int
    caller: dict[str, str]
    signals: StopRequests
    nginx: str | None = None
    """The nginx binary of the gateway; ``None``: no gateway (the console is opened directly)."""
    apis: int = 1
    """api processes per service (ports :data:`INSTANCE_PORT_STEP` apart; the gateway balances them)."""
    workers: int = 1
    """worker processes per service (one consumer group: each is one consumer of it)."""
    upstream_groups: bool = False
    """Give the gateway ``upstream`` blocks with keepalive even for one api process per service (what more
    than one always gets), so one and several processes are compared on the same proxy path."""
    servers: list[Server] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    failed: bool = False

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def gateway_port(self) -> int:
        return GATEWAY_PORT + self.offset

    @property
    def public(self) -> str:
        """The URL people open (no trailing slash): the gateway's, or the console's without nginx."""
        return public_url(self.offset, gateway=self.nginx is not None)

    @property
    def has_console(self) -> bool:
        return any(spec.name == "console" for spec in self.specs)

    def plan(self) -> list[tuple[str, int]]:
        """Every port this stack will use, by owner: servers, APIs, workers, ``{port:N}`` in dev_env."""
        ports = []
        if self.nginx is not None:
            ports.append(("gateway", self.gateway_port))
        if not self.caller.get("REDIS_URL"):
            ports.append(("redis-server", DEFAULT_REDIS_PORT + self.offset))
        if not self.caller.get("MONGO_URL"):
            ports.append(("nx-27017", DEFAULT_MONGO_PORT + self.offset))
        for spec in self.specs:
            api = _default_port(spec) + self.offset
            ports += [(f"{spec.name}-{role}", port) for role, port in roles(spec, api, self.apis, self.workers)]
            shift = _PortShift(self.offset)
            dev_defaults(spec, self.offset, self.data_dir, shift, self.public)
            ports += [(f"{spec.name} (dev_env)", port) for port in shift.ports]
        return ports

    def busy_service_ports(self) -> list[tuple[str, int]]:
        """Gateway, API and worker ports another process already listens on (the embedded servers and the
        mail catcher move to a free port instead)."""
        return [(label, port) for label, port in self.plan() if _owned(label) and port_open(port)]

    def start_servers(self) -> dict[str, str]:
        urls: dict[str, str] = {}
        if not self.caller.get("REDIS_URL"):
            port = _free_or_other(DEFAULT_REDIS_PORT + self.offset)
            proc = redis_server(port, self.data_dir / "redis", persist=True).start(setup=child_setup)
            urls["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            self._server("redis-server", f"redis://127.0.0.1:{port}", proc, self.data_dir / "redis")
        if not self.caller.get("MONGO_URL"):
            port = _free_or_other(DEFAULT_MONGO_PORT + self.offset)
            server = mongo_server(port, self.data_dir / "mongo-run", data_dir=self.data_dir / "mongo")
            proc = server.start(setup=child_setup)
            urls["MONGO_URL"] = f"mongodb://127.0.0.1:{port}"
            self._server("nx-27017", f"mongodb://127.0.0.1:{port}", proc, self.data_dir / "mongo")
        return urls

    def _server(self, label: str, url: str, proc: ServerProcess, data: Path) -> None:
        assert proc.proc is not None
        self.servers.append(Server(label, url, proc, proc.log_path))
        _say(f"{label:<22} {url}  pid {proc.proc.pid}  (data: {data}, logs: {proc.log_path})")

    def start_services(self, urls: Mapping[str, str]) -> None:
        for spec in self.specs:
            api = _default_port(spec) + self.offset
            defaults = dev_defaults(spec, self.offset, self.data_dir, _PortShift(self.offset), self.public)
            for name, port in roles(spec, api, self.apis, self.workers):
                role = role_of(name)
                http_port = port if role == "api" else api
                stack = {**urls, "HTTP_PORT": str(http_port), "WORKER_HTTP_PORT": str(port)}
                env = process_env(defaults, self.caller, stack)
                label = f"{spec.name}-{name}"
                log_path = self.logs / f"{label}.log"
                with open(log_path, "ab") as log:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", spec.package, role],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,  # a terminal's Ctrl-C reaches the runner only
                        preexec_fn=child_setup,  # safe: the runner has no threads
                    )
                self.children.append(Child(label, f"http://127.0.0.1:{port}", proc, log_path))

    def start_gateway(self) -> None:
        """nginx with the shipped config in front of every service's api process (``console`` at ``/``).
        A gateway that cannot start is reported (the stack goes on: the console's own URL still works)."""
        if self.nginx is None:
            return
        upstreams: dict[str, int | list[int]] = {}
        for spec in self.specs:
            ports = [port for name, port in roles(spec, _default_port(spec) + self.offset, self.apis, 0)]
            upstreams[spec.name] = ports if self.apis > 1 or self.upstream_groups else ports[0]
        directory = self.data_dir / "gateway"
        try:
            conf = gateway_config(directory, self.gateway_port, upstreams)
            proc = gateway_server(self.nginx, conf, self.gateway_port, self.logs / "gateway.log")
            proc.start(setup=child_setup)
        except (GatewayConfigError, RuntimeError, OSError) as exc:
            self.failed = True
            fallback = public_url(self.offset, gateway=False)
            _say(f"gateway: cannot start nginx: {exc}; open the console directly: {fallback}/")
            return
        self._server("gateway", f"{self.public}/", proc, directory)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        pending = list(self.children)
        while pending and not self.signals.stopping and time.monotonic() < deadline:
            for child in list(pending):
                if child.proc.poll() is not None:
                    child.reported = True
                    self.failed = True
                    why = _last_line(child.log_path)
                    _say(f"{child.label:<22} EXITED: {describe_exit(child.proc.returncode)}; see {child.log_path}")
                    if why:
                        _say(f"{child.label:<22} last log line: {why}")
                    pending.remove(child)
                elif _ready(child.url):
                    child.ready = True
                    _say(f"{child.label:<22} {child.url}  ready  pid {child.proc.pid}  (logs: {child.log_path})")
                    pending.remove(child)
            self.signals.wait(0.1)
        if self.signals.stopping:
            return
        for child in pending:
            self.failed = True
            _say(f"{child.label:<22} {child.url}  NOT READY after {STARTUP_TIMEOUT:.0f}s; see {child.log_path}")

    def watch(self) -> None:
        """Until a stop signal, or until no service process is left: reap and report any process that exits
        on its own (a crashed server is reaped here, so it never lingers as a zombie holding its pid
        file)."""
        while not self.signals.stopping:
            if all(child.proc.poll() is not None for child in self.children):
                _say("no service process is left running")
                return
            for child in self.children:
                if not child.reported and child.proc.poll() is not None:
                    child.reported = True
                    self.failed = True
                    _say(f"{child.label} {describe_exit(child.proc.returncode)}; see {child.log_path}")
            for server in self.servers:
                proc = server.server.proc
                if not server.reported and proc is not None and proc.poll() is not None:
                    server.reported = True
                    self.failed = True
                    _say(f"{server.label} {describe_exit(proc.returncode)}; see {server.log_path}")
            self.signals.wait(0.2)

    def stop(self) -> None:
        alive = [c for c in self.children if c.proc.poll() is None]
        if alive:
            _say("stopping: every process drains (Ctrl-C again forces)")
        for child in alive:
            child.proc.send_signal(signal.SIGTERM)
        forced = False
        deadline = time.monotonic() + _shutdown_timeout(self.caller) + DRAIN_MARGIN
        while alive:
            if self.signals.forced and not forced:
                forced = True
                deadline = min(deadline, time.monotonic() + FORCE_GRACE)
                for child in alive:
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.send_signal(signal.SIGTERM)  # the runtime's second signal: exit at once
            if time.monotonic() > deadline:
                for child in alive:
                    self.failed = True
                    _say(f"{child.label} did not stop in time: killed")
                    child.proc.kill()
                    child.proc.wait()
            self.signals.wait(0.1)
            alive = [c for c in alive if c.proc.poll() is None]
        for child in self.children:
            code = child.proc.returncode
            if not child.reported and code not in (0, -signal.SIGTERM) and not self.signals.forced:
                self.failed = True
                _say(f"{child.label} {describe_exit(code)} while stopping; see {child.log_path}")
        for server in reversed(self.servers):
            server.server.stop(FORCE_GRACE if self.signals.forced else 10.0)


def _owned(label: str) -> bool:
    """Whether a :meth:`DevStack.plan` label names a port the stack cannot move (gateway, api, worker)."""
    if label == "gateway":
        return True
    _service, _, name = label.partition("-")
    return role_of(name) in ("api", "worker") and name.count("-") <= 1


def _free_or_other(port: int) -> int:
    return port if not port_open(port) else free_port()


def _shutdown_timeout(env: Mapping[str, str]) -> float:
    try:
        return float(env.get("SHUTDOWN_TIMEOUT") or DEFAULT_SHUTDOWN_TIMEOUT)
    except ValueError:
        return DEFAULT_SHUTDOWN_TIMEOUT


def run(data_dir: Path, only: list[str] | None = None, port_offset: int = 0, apis: int = 1, workers: int = 1) -> int:
    """Start the stack, wait for a stop signal, stop it. Exit status: 0 when every process started and
    stopped cleanly, 1 when one failed (reported), 2 on bad input, 130 when a second signal forced the
    stop."""
    signals = StopRequests()
    try:
        return _run(signals, data_dir, only, port_offset, apis, workers)
    finally:
        signals.release()


def _run(
    signals: StopRequests, data_dir: Path, only: list[str] | None, port_offset: int, apis: int, workers: int
) -> int:
    installed = discover()
    specs = [s for s in installed if not only or s.name in only]
    unknown = sorted(set(only or ()) - {s.name for s in installed})
    if unknown or not specs:
        names = ", ".join(s.name for s in installed) or "none (entry point group novapulse.services)"
        _say(f"configuration error: --only: no service named {', '.join(unknown)}; installed: {names}")
        return CONFIG_ERROR_EXIT
    data_dir = data_dir.resolve()
    nginx = nginx_binary(os.environ.get("NOVAPULSE_NGINX", ""))
    stack = DevStack(data_dir, specs, port_offset, dict(os.environ), signals, nginx=nginx, apis=apis, workers=workers)
    try:
        check_ports(stack.plan(), port_offset)
        try:
            stack.logs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"NOVAPULSE_DATA_DIR: cannot use {data_dir}: {exc.strerror or exc}") from None
    except ConfigError as exc:
        _say(f"configuration error: {exc}")
        return CONFIG_ERROR_EXIT
    except StackError as exc:
        _say(str(exc))
        return 1
    try:
        lock = _lock(data_dir)
    except StackError as exc:
        _say(str(exc))
        return 1
    try:
        busy = stack.busy_service_ports()
        for label, port in busy:
            way_out = " (or NOVAPULSE_NGINX=off: no gateway)" if label == "gateway" else ""
            _say(f"port {port} ({label}) is in use: another stack? stop it or set NOVAPULSE_PORT_OFFSET{way_out}")
        if busy:
            return 1
        _announce(stack)
        try:
            urls = stack.start_servers()
            stack.start_gateway()
            stack.start_services(urls)
        except (StackError, RuntimeError, OSError) as exc:
            _say(f"cannot start: {exc}")
            stack.failed = True
        else:
            stack.wait_ready()
            if not stack.signals.stopping:
                opened = f"; open {stack.public}/" if stack.has_console else ""
                _say(
                    f"all started{opened}; Ctrl-C stops everything"
                    if not stack.failed
                    else "started with errors (above)"
                )
                stack.watch()
    finally:
        stack.stop()
        lock.close()
    code = FORCED_EXIT if signals.forced else 1 if stack.failed else 0
    _say(f"stopped (exit status {code})")
    return code


def _announce(stack: DevStack) -> None:
    """The first lines of ``make run``: the one URL to open (the gateway's, else the console's own)."""
    if stack.nginx is None:
        why = (
            "NOVAPULSE_NGINX=" + stack.caller["NOVAPULSE_NGINX"] if stack.caller.get("NOVAPULSE_NGINX") else "no nginx"
        )
        _say(
            f"{why}: no gateway on port {stack.gateway_port}; the console calls the services directly "
            "(make deploy-tools installs nginx as root)"
        )
    if stack.has_console:
        rule = "=" * 64
        through = "the console and every API, through the gateway" if stack.nginx else "the console"
        _say(rule)
        _say(f"  Open {stack.public}/   ({through})")
        _say(rule)
    elif stack.nginx is not None:
        _say(f"gateway: {stack.public}/api/v1/<service>/...")


def _count(raw: str) -> int:
    """``--apis`` / ``--workers``: a whole number from 1 to :data:`MAX_INSTANCES`."""
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_INSTANCES:
        raise argparse.ArgumentTypeError(f"a whole number from 1 to {MAX_INSTANCES}, got {raw!r}")
    return int(raw)


def cli() -> None:
    parser = argparse.ArgumentParser(description="Run every NovaPulse service locally")
    parser.add_argument("--data-dir", default=os.environ.get("NOVAPULSE_DATA_DIR") or ".data")
    parser.add_argument("--only", nargs="*", help="service names to run (default: all)")
    parser.add_argument("--apis", type=_count, default=1, help="api processes per service (behind the gateway)")
    parser.add_argument("--workers", type=_count, default=1, help="worker processes per service")
    parser.add_argument(
        "--port-offset",
        default=os.environ.get("NOVAPULSE_PORT_OFFSET", ""),
        help="added to every port of the stack, to run a second stack beside the first",
    )
    args = parser.parse_args()
    try:
        offset = parse_port_offset(args.port_offset)
    except ConfigError as exc:
        _say(f"configuration error: {exc}")
        sys.exit(CONFIG_ERROR_EXIT)
    sys.exit(run(Path(args.data_dir), args.only, offset, args.apis, args.workers))


if __name__ == "__main__":
    cli()
