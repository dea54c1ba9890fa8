"""pytest plugin: real Redis and MongoDB-wire servers per test session, isolated names per test, and
helpers to run services as real processes. Enabled from the root ``conftest.py``.

Set ``REDIS_URL`` / ``MONGO_URL`` to run the suite against servers you already have (a real MongoDB, say).
``NOVAPULSE_TEST_REDIS=cluster`` (``make test-cluster``) makes the session's Redis a real 3-primary Redis
Cluster on loopback (:func:`redis_cluster_url`), so every test using ``redis_url`` runs against a cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .servers import (
    SentinelGroup,
    ServerProcess,
    free_port,
    mongo_server,
    redis_cluster,
    redis_server,
    stop_process,
    wait_for_port,
)


@dataclass
class Servers:
    redis_url: str
    mongo_url: str
    redis: ServerProcess | None = None
    mongo: ServerProcess | None = None


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


TEST_REDIS_ENV = "NOVAPULSE_TEST_REDIS"
"""``cluster``: the session's Redis (``redis_url``, the services spawned) is a 3-primary Redis Cluster."""


@pytest.fixture(scope="session")
def redis_cluster_url(run_dir: Path) -> Iterator[str]:
    """A real 3-primary Redis Cluster on free loopback ports for the whole session (started on first use,
    stopped at the end): its ``redis+cluster://127.0.0.1:P1,...`` URL."""
    cluster = redis_cluster(run_dir / "redis-cluster").start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def servers(run_dir: Path, request: pytest.FixtureRequest) -> Iterator[Servers]:
    started: list[ServerProcess] = []
    redis_url = os.environ.get("REDIS_URL", "")
    mongo_url = os.environ.get("MONGO_URL", "")
    redis_proc = mongo_proc = None
    if not redis_url and os.environ.get(TEST_REDIS_ENV, "") == "cluster":
        redis_url = request.getfixturevalue("redis_cluster_url")
    if not redis_url:
        port = free_port()
        redis_proc = redis_server(port, run_dir / "redis").start()
        started.append(redis_proc)
        redis_url = f"redis://127.0.0.1:{port}/0"
    if not mongo_url:
        port = free_port()
        mongo_proc = mongo_server(port, run_dir / "mongo").start()
        started.append(mongo_proc)
        mongo_url = f"mongodb://127.0.0.1:{port}"
    try:
        yield Servers(redis_url, mongo_url, redis_proc, mongo_proc)
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture(scope="session")
def redis_url(servers: Servers) -> str:
    return servers.redis_url


@pytest.fixture(scope="session")
def mongo_url(servers: Servers) -> str:
    return servers.mongo_url


@pytest.fixture
def names() -> str:
    """A unique prefix for this test's databases, streams and keys."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def server_factory(run_dir: Path) -> Iterator[Callable[[str], ServerProcess]]:
    """Start extra, killable servers for outage tests: ``server_factory("redis")`` or ``("mongo")``."""
    made: list[ServerProcess] = []

    def make(kind: str, port: int | None = None) -> ServerProcess:
        port = port or free_port()
        directory = run_dir / f"{kind}-{port}-{uuid.uuid4().hex[:6]}"
        proc = redis_server(port, directory) if kind == "redis" else mongo_server(port, directory)
        made.append(proc)
        return proc.start()

    yield make
    for proc in made:
        proc.stop()


async def wait_until(
    predicate: Callable[[], Awaitable[bool] | bool],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds. Never a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


@dataclass
class ServiceProcess:
    """A service role running as a real child process (``python -m package role``)."""

    package: str
    role: str
    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0, wait_ready: bool = True) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.package, self.role, *self.extra_args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> ServiceProcess:
        """Wait until the started process accepts connections on its port; ``RuntimeError`` (with its log) if
        it exits first or ``timeout`` seconds pass."""
        assert self.proc is not None, "start() first"
        problem = wait_for_port(self.proc, self.port, timeout)
        if problem is not None:
            raise RuntimeError(f"{self.package} {self.role} {problem}:\n{self.logs()}")
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        stop_process(self.proc, 15)


def start_together(processes: Iterable[ServiceProcess], timeout: float = 30.0) -> None:
    """Start every process of ``processes`` at once, then wait until each accepts connections: their start-ups
    (imports, ~1-2 s of CPU each) overlap on the machine's cores instead of queueing one behind the other.
    ``timeout`` is seconds per process, and the deadline for all of them is ``timeout`` times their number
    (the budget of starting them one by one: on a loaded machine they compete, and the first may be ready
    last); ``RuntimeError`` (with the process's log) names the first that exited or was not ready by then.
    Only for processes that need nothing of each other to start."""
    started = [p.start(wait_ready=False) for p in processes]
    deadline = time.monotonic() + timeout * len(started)
    for p in started:
        p.wait_ready(max(0.0, deadline - time.monotonic()))


def stop_together(processes: Iterable[ServiceProcess], timeout: float = 15.0) -> None:
    """SIGTERM to every process of ``processes`` at once (each drains while the others do), then SIGKILL to any
    still running ``timeout`` seconds later; returns once all have exited."""
    running = [p.proc for p in processes if p.proc is not None and p.proc.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in running:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def spawn(tmp_path: Path, servers: Servers, names: str) -> Iterator[Callable[..., ServiceProcess]]:
    """Run service processes against the session's servers; each gets its own port and database."""
    procs: list[ServiceProcess] = []

    def start(
        package: str, role: str = "api", *, env: dict[str, str] | None = None, start: bool = True, **kw: Any
    ) -> ServiceProcess:
        port = free_port()
        full_env = dict(os.environ)
        full_env.update(
            {
                "REDIS_URL": servers.redis_url,
                "MONGO_URL": servers.mongo_url,
                "MONGO_DB": re.sub(r"[^A-Za-z0-9_]", "_", f"{names}_{package}")[:60],
                "HTTP_HOST": "127.0.0.1",
                "HTTP_PORT": str(port),
                "WORKER_HTTP_PORT": str(port),
                "SHUTDOWN_TIMEOUT": "10",
                "PYTHONUNBUFFERED": "1",
            }
        )
        full_env.update(env or {})
        port = int(full_env.get("HTTP_PORT", port))
        sp = ServiceProcess(package, role, full_env, port, tmp_path / f"{package}-{role}-{len(procs)}.log", **kw)
        procs.append(sp)
        return sp.start() if start else sp

    yield start
    stop_together(procs)


class TokenIssuer:
    """A stand-in for the auth service's signing side in other services' tests: an Ed25519 key, its JWKS
    served over real HTTP, and access tokens minted the way the auth service mints them."""

    def __init__(self, issuer: str = "novapulse-auth", audience: str = "novapulse") -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from jwt.algorithms import OKPAlgorithm

        self.issuer = issuer
        self.audience = audience
        self.kid = "test-" + uuid.uuid4().hex[:8]
        self.private_key = Ed25519PrivateKey.generate()
        jwk = json.loads(OKPAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "EdDSA"})
        self.jwks: dict[str, Any] = {"keys": [jwk]}
        self.jwks_url = ""

    def mint(
        self,
        user_id: str,
        org_id: str,
        role: str = "owner",
        *,
        ttl: int = 300,
        amr: tuple[str, ...] = ("pwd",),
        **claims: Any,
    ) -> str:
        import jwt

        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "org": org_id,
            "role": role,
            "amr": list(amr),
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "sid": uuid.uuid4().hex,  # every verifier with a revocation list requires a session id
        }
        payload.update(claims)
        return jwt.encode(payload, self.private_key, algorithm="EdDSA", headers={"kid": self.kid, "typ": "at+jwt"})

    def env(self) -> dict[str, str]:
        return {"AUTH_JWKS_URL": self.jwks_url, "AUTH_ISSUER": self.issuer, "AUTH_AUDIENCE": self.audience}


@pytest.fixture(scope="session")
def token_issuer() -> Iterator[TokenIssuer]:
    """A JWKS served over real HTTP plus a minter of access tokens it verifies."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    issuer = TokenIssuer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(issuer.jwks).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.jwks_url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield issuer
    server.shutdown()
    server.server_close()


# --- index audit ---------------------------------------------------------------------------------------------
# Every test run records the shape of each query our code sends (novapulse_runtime.querylog, in this process
# and, through the environment, in every service process the tests start) and, at the end, fails the run if
# one is not served by a declared index (novapulse_devkit.indexaudit). NOVAPULSE_INDEX_AUDIT=0 turns it off.

INDEX_AUDIT_ENV = "NOVAPULSE_INDEX_AUDIT"
_QUERY_LOG_DIR = pytest.StashKey[Path]()
_UNSERVED = pytest.StashKey[list[Any]]()


def pytest_configure(config: pytest.Config) -> None:
    from novapulse_runtime.querylog import QUERY_LOG_ENV, install_from_env

    if os.environ.get(INDEX_AUDIT_ENV, "1") == "0":
        return
    directory = Path(os.environ.get(QUERY_LOG_ENV) or tempfile.mkdtemp(prefix="novapulse-querylog-"))
    os.environ[QUERY_LOG_ENV] = str(directory)
    config.stash[_QUERY_LOG_DIR] = directory
    install_from_env()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from novapulse_runtime.querylog import install_from_env

    from .indexaudit import report

    directory = session.config.stash.get(_QUERY_LOG_DIR, None)
    if directory is None:
        return
    recorder = install_from_env()
    if recorder is not None:
        recorder.write()
    problems = report(directory)
    session.config.stash[_UNSERVED] = problems
    if problems and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    problems = config.stash.get(_UNSERVED, None)
    if problems is None:
        return
    if problems:
        terminalreporter.section("index audit: queries no declared index serves", red=True)
        for item in problems:
            terminalreporter.line(item.describe())
        terminalreporter.line("declare an index (the repository's ensure_indexes) or, for a deliberate scan, a")
        terminalreporter.line("waiver with its reason in novapulse_devkit.indexaudit.WAIVERS")
    else:
        terminalreporter.line("index audit: every recorded query is served by a declared index")


@pytest.fixture
def sentinel_group(run_dir: Path) -> Iterator[SentinelGroup]:
    """A fresh primary + replica + three Sentinels (quorum 2, down-after 1 s) for one fail-over test; its
    ``url`` is the ``redis+sentinel://`` URL (see :class:`~novapulse_devkit.servers.SentinelGroup`)."""
    group = SentinelGroup(run_dir / f"sentinel-{uuid.uuid4().hex[:6]}")
    try:
        yield group.start()
    finally:
        group.stop()
