"""`make run`'s stack as real processes: embedded Redis and MongoDB-wire servers, every service's API and
worker; one Ctrl-C (SIGINT to the terminal's process group) drains everything and exits 0, a second forces;
every port-derived value moves with NOVAPULSE_PORT_OFFSET (an authenticated route answers on a shifted
stack); the caller's environment wins over development defaults; a crashed nx-27017 is reaped and its pid
file never blocks the next start. Bad input, by kind, is refused with one line."""

from __future__ import annotations

import asyncio
import email.parser as email_parser
import email.policy as email_policy
import fcntl
import http.cookiejar
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from novapulse_devkit.gateway import GATEWAY_PORT, nginx_binary
from novapulse_devkit.servers import (
    ServerProcess,
    free_port,
    mongo_server,
    port_open,
    process_alive,
    release_stale_pid_file,
)
from novapulse_devkit.stack import (
    DEFAULT_MONGO_PORT,
    DEFAULT_REDIS_PORT,
    INSTANCE_PORT_STEP,
    ConfigError,
    DevStack,
    StopRequests,
    _PortShift,
    _ready,
    dev_defaults,
    discover,
    parse_port_offset,
    process_env,
    role_of,
    roles,
    shift_loopback_url,
)
from novapulse_devkit.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = re.compile(r"\] (\S+)\s+(http://127\.0\.0\.1:\d+)\s+ready\s+pid (\d+)")
SERVER_LINE = re.compile(r"\] (redis-server|nx-27017)\s+\S+\s+pid (\d+)")


def _offset() -> int:
    """A random offset whose stack ports are free now (other suites share this machine) and stay below the
    ephemeral range (32768-), where a probe can connect to itself before the service binds its port."""
    bases = [DEFAULT_REDIS_PORT, DEFAULT_MONGO_PORT, 1025, GATEWAY_PORT]
    for spec in discover():
        api = int(spec.settings_cls.model_fields["http_port"].default)
        bases += [port for _role, port in roles(spec, api)]
    for _ in range(50):
        offset = random.randrange(1000, 5700)  # the highest base, nx-27017's 27027, stays below 32768
        if not any(port_open(base + offset) for base in bases):
            return offset
    raise AssertionError("no free port offset found")


def _caller_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MONGO_URL", "NOVAPULSE_PORT_OFFSET")}
    env.update(extra)
    return env


def _default_sigint() -> None:
    """In the child before exec: SIGINT's default action (an ignored signal stays ignored across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Runner:
    """The dev stack as a real process in its own process group (as a terminal's foreground job)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            # a terminal's job starts with Ctrl-C's default action even when this test's own process was started
            # with SIGINT ignored (a background job of a non-interactive shell): make would then ignore it too
            preexec_fn=_default_sigint,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 150) -> None:
        def seen() -> bool:
            if text in self.output:
                return True
            assert self.proc.poll() is None or text in self.output, f"runner exited; output:\n{self.output}"
            return False

        asyncio.run(wait_until(seen, timeout=timeout, interval=0.1, message=f"{text!r} in:\n{self.output}"))

    def group_signal(self, sig: signal.Signals) -> None:
        """What a terminal does on Ctrl-C, and what the lead's stop hook does: signal the whole group."""
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def ready(self) -> dict[str, tuple[str, int]]:
        """label → (url, pid) of every service process reported ready."""
        return {m[1]: (m[2], int(m[3])) for m in READY_LINE.finditer(self.output)}

    def servers(self) -> dict[str, int]:
        return {m[1]: int(m[2]) for m in SERVER_LINE.finditer(self.output)}

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # children get SIGTERM from the kernel (PDEATHSIG)
            self.proc.wait()
        for pid in [p for _u, p in self.ready().values()] + list(self.servers().values()):
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _devstack(data_dir: Path, *only: str) -> list[str]:
    argv = [sys.executable, "-m", "novapulse_devkit.stack", "--data-dir", str(data_dir)]
    return argv + (["--only", *only] if only else [])


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _http(method: str, url: str, body: dict[str, Any] | None = None, token: str = "") -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - local URL
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def _console_sign_in(base: str, email: str, password: str) -> str:
    """Sign in to the console at ``base`` as a browser does (cookie, CSRF field, Origin); the home page."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect)
    with opener.open(f"{base}/sign-in", timeout=30) as resp:
        page = resp.read().decode()
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    fields = urllib.parse.urlencode({"csrf_token": found[1], "email": email, "password": password, "next": "/"})
    request = urllib.request.Request(f"{base}/sign-in", data=fields.encode(), headers={"Origin": base})  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as refused:  # the 303 is not followed
        opener.open(request, timeout=30)
    with refused.value as answer:
        assert answer.code == 303, answer.read().decode()
        assert answer.headers["Location"] == "/"
    with opener.open(f"{base}/", timeout=30) as resp:
        assert resp.url == f"{base}/"
        return str(resp.read().decode())


def _mailed_token(mail_dir: Path, email: str, timeout: float = 30.0) -> str:
    """The verification token in the mail the catcher stored for ``email`` (polled with a deadline)."""
    found: list[str] = []

    def arrived() -> bool:
        for path in sorted(mail_dir.glob("*.eml")):
            message = email_parser.BytesParser(policy=email_policy.default).parsebytes(path.read_bytes())
            if email not in str(message["To"]):
                continue
            part = message.get_body(preferencelist=("plain",))
            match = re.search(r"[?&]token=([A-Za-z0-9_%.~-]+)", part.get_content() if part is not None else "")
            if match:
                found.append(urllib.parse.unquote(match.group(1)))
                return True
        return False

    asyncio.run(wait_until(arrived, timeout=timeout, interval=0.2, message=f"verification mail to {email}"))
    return found[0]


def _service_logs(data_dir: Path) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted((data_dir / "logs").glob("*.log"))}


def _assert_drained(data_dir: Path, labels: list[str]) -> None:
    logs = _service_logs(data_dir)
    for label in labels:
        text = logs[label]
        assert '"shutting down"' in text, (label, text[-2000:])
        assert "second signal" not in text, (label, text[-2000:])
        assert re.search(r'"msg": "stopped".*"exit_code": 0', text), (label, text[-2000:])


@pytest.mark.e2e
def test_one_ctrl_c_on_make_run_drains_every_process_and_a_shifted_stack_authenticates(tmp_path: Path) -> None:
    specs = discover()
    assert specs, "no service is installed: make run would have nothing to run"
    data_dir = tmp_path / "data"
    offset = _offset()
    env = _caller_env(
        NOVAPULSE_DATA_DIR=str(data_dir),
        NOVAPULSE_PORT_OFFSET=str(offset),
        WEBHOOK_ALLOWED_CIDRS="10.0.0.0/8",  # tighter than the dev default 127.0.0.0/8: the caller wins
    )
    runner = Runner(["make", "--no-print-directory", "run"], env)
    try:
        runner.wait_for("all started")
        ready = runner.ready()
        assert len(ready) == sum(len(roles(s, 0)) for s in specs), runner.output
        assert set(runner.servers()) == {"redis-server", "nx-27017"}, runner.output
        for url, _pid in ready.values():
            assert int(url.rsplit(":", 1)[1]) > offset
            for path in ("/api/v1/health", "/api/v1/health/live", "/api/v1/health/ready", "/api/v1/metrics"):
                with urllib.request.urlopen(url + path, timeout=5) as resp:  # noqa: S310
                    assert resp.status == 200, (url, path)
        assert f"mongodb://127.0.0.1:{DEFAULT_MONGO_PORT + offset}" in runner.output

        # An authenticated route of every other service accepts the shifted auth service's tokens.
        auth = ready["auth-api"][0]
        email = f"dev-{uuid.uuid4().hex[:8]}@example.com"
        status, body = _http(
            "POST",
            f"{auth}/api/v1/auth/register",
            {
                "email": email,
                "password": "correct horse battery staple",
                "name": "Dev",
                "organization": f"Acme-{email}",
            },
        )
        assert status == 202, body  # registration completes by the link mailed to the stack's mail catcher
        token = _mailed_token(data_dir / "mail", email)
        status, body = _http(
            "POST", f"{auth}/api/v1/auth/register/verify", {"token": token, "password": "correct horse battery staple"}
        )
        assert status == 201, body
        status, body = _http(
            "POST", f"{auth}/api/v1/auth/login", {"email": email, "password": "correct horse battery staple"}
        )
        assert status == 200, body
        token = body["access_token"]
        status, body = _http("GET", f"{ready['webhook-api'][0]}/api/v1/webhooks/endpoints", token=token)
        assert status == 200, body
        status, body = _http("GET", f"{ready['notification-api'][0]}/api/v1/notifications/preferences", token=token)
        assert status == 200, body

        # The gateway (nginx installed): its URL is the first thing printed; / is the console (a browser's
        # sign-in, CSRF and Origin checked, works through it), /api/v1/auth/ is auth.
        if nginx_binary() is not None:
            gateway = f"http://127.0.0.1:{GATEWAY_PORT + offset}"
            said = [line for line in runner.lines if line.startswith("[novapulse]")]
            assert f"Open {gateway}/" in "".join(said[:3]), runner.output
            status, body = _http("GET", f"{gateway}/api/v1/auth/me", token=token)
            assert (status, body["user"]["email"]) == (200, email)
            assert f"Acme-{email}" in _console_sign_in(gateway, email, "correct horse battery staple")
            assert _environ(ready["auth-api"][1])["REGISTRATION_VERIFY_URL"] == f"{gateway}/register/verify"

        webhook_env = _environ(ready["webhook-api"][1])
        assert webhook_env["WEBHOOK_ALLOWED_CIDRS"] == "10.0.0.0/8"
        assert webhook_env["AUTH_JWKS_URL"] == f"{auth}/api/v1/auth/.well-known/jwks.json"
        notification_env = _environ(ready["notification-worker"][1])
        assert notification_env["MAIL_CATCHER_DIR"] == str(data_dir / "mail")
        assert notification_env["MAIL_CATCHER_PORT"] == str(1025 + offset)
        assert (data_dir / "mail").is_dir()

        runner.group_signal(signal.SIGINT)  # Ctrl-C: SIGINT to make and the runner
        # make waits for the runner, then re-raises the SIGINT it got on itself (GNU make's own behaviour)
        assert runner.wait() == -signal.SIGINT
        assert runner.output.rstrip().endswith("[novapulse] stopped (exit status 0)"), runner.output
        for bad in ("EXITED", "NOT READY", "Traceback", "forcing"):
            assert bad not in runner.output, runner.output
        _assert_drained(data_dir, list(ready))
        for url, pid in ready.values():
            assert not port_open(int(url.rsplit(":", 1)[1]))
            assert not process_alive(pid)
    finally:
        runner.close()


@pytest.mark.e2e
def test_sigterm_to_the_group_of_setsid_make_run_stops_cleanly(tmp_path: Path) -> None:
    """The lead's stop hook: make forwards the group's SIGTERM to the runner, which must not count it as a
    second request (that would force every process)."""
    data_dir = tmp_path / "data"
    env = _caller_env(NOVAPULSE_DATA_DIR=str(data_dir), NOVAPULSE_PORT_OFFSET=str(_offset()))
    runner = Runner(["make", "--no-print-directory", "run"], env)
    try:
        runner.wait_for("all started")
        ready = runner.ready()
        runner.group_signal(signal.SIGTERM)
        runner.wait()
        for bad in ("EXITED", "NOT READY", "Traceback", "forcing"):
            assert bad not in runner.output, runner.output
        assert runner.output.rstrip().endswith("[novapulse] stopped (exit status 0)"), runner.output
        _assert_drained(data_dir, list(ready))
    finally:
        runner.close()


@pytest.mark.e2e
def test_second_ctrl_c_forces_a_process_that_is_still_draining(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = _caller_env(NOVAPULSE_PORT_OFFSET=str(_offset()), SHUTDOWN_TIMEOUT="600")
    runner = Runner(_devstack(data_dir, "auth"), env)
    try:
        runner.wait_for("all started")
        ready = runner.ready()
        _url, stuck = ready["auth-worker"]
        os.kill(stuck, signal.SIGSTOP)  # stands for a drain that does not end: it cannot even see SIGTERM
        runner.group_signal(signal.SIGINT)
        runner.wait_for("stopping")
        asyncio.run(wait_until(lambda: not process_alive(ready["auth-api"][1]), timeout=60, message="auth-api drained"))
        assert runner.proc.poll() is None, runner.output  # still waiting for the stuck worker
        runner.group_signal(signal.SIGINT)  # the second Ctrl-C
        assert runner.wait(60) == 130, runner.output
        assert "forcing" in runner.output
        assert "auth-worker did not stop in time: killed" in runner.output
        assert not process_alive(stuck)
        _assert_drained(data_dir, ["auth-api"])
        assert all(not process_alive(pid) for pid in runner.servers().values())
    finally:
        runner.close()


@pytest.mark.chaos
def test_killed_nx_is_reaped_and_reported_and_the_next_start_on_the_same_data_dir_works(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = _caller_env(NOVAPULSE_PORT_OFFSET=str(_offset()))
    first = Runner(_devstack(data_dir, "auth"), env)
    try:
        first.wait_for("all started")
        nx = first.servers()["nx-27017"]
        pid_file = next((data_dir / "mongo-run").glob("nx-*.pid"))
        assert pid_file.read_text().strip() == str(nx)
        os.kill(nx, signal.SIGKILL)
        first.wait_for("nx-27017 killed by SIGKILL")
        assert not Path(f"/proc/{nx}").exists(), "the runner must reap its crashed server (no zombie)"
        assert pid_file.exists()  # nx had no chance to remove it: stale
        first.group_signal(signal.SIGTERM)
        assert first.wait() == 1, first.output  # a process failed during the run: reported, and in the status
    finally:
        first.close()
    second = Runner(_devstack(data_dir, "auth"), env)
    try:
        second.wait_for("all started")
        assert "EXITED" not in second.output
        second.group_signal(signal.SIGTERM)
        assert second.wait() == 0, second.output
    finally:
        second.close()


@pytest.mark.chaos
def test_runner_killed_with_minus_9_leaves_no_process_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    runner = Runner(_devstack(data_dir, "auth"), _caller_env(NOVAPULSE_PORT_OFFSET=str(_offset())))
    try:
        runner.wait_for("all started")
        pids = [pid for _url, pid in runner.ready().values()] + list(runner.servers().values())
        os.kill(runner.proc.pid, signal.SIGKILL)
        runner.wait()
        asyncio.run(wait_until(lambda: not any(process_alive(p) for p in pids), timeout=60, message="orphans gone"))
        _assert_drained(data_dir, list(runner.ready()))  # SIGTERM from the kernel, then a normal drain
        assert not list((data_dir / "mongo-run").glob("nx-*.pid"))  # nx-27017 stopped cleanly too
    finally:
        runner.close()


# --- bad input, by kind -------------------------------------------------------------------------------


def _cli(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_devstack(tmp_path / "data", "auth")],
        env=_caller_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.unit
@pytest.mark.parametrize("raw", ["abc", "-5", "1.5", "٣", "4700x", " 1 2"])
def test_port_offset_that_is_not_a_whole_number_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="NOVAPULSE_PORT_OFFSET: must be a whole number"):
        parse_port_offset(raw)
    assert parse_port_offset("") == 0
    assert parse_port_offset(" 4700 ") == 4700


@pytest.mark.e2e
def test_bad_port_offset_stops_make_run_with_one_line_and_status_2(tmp_path: Path) -> None:
    done = _cli(tmp_path, NOVAPULSE_PORT_OFFSET="forty")
    assert done.returncode == 2, done
    assert done.stdout.strip().splitlines() == [
        "[novapulse] configuration error: NOVAPULSE_PORT_OFFSET: must be a whole number >= 0, got 'forty'"
    ]
    assert "Traceback" not in done.stderr


@pytest.mark.e2e
def test_port_offset_moving_a_port_over_65535_is_refused_before_anything_starts(tmp_path: Path) -> None:
    done = _cli(tmp_path, NOVAPULSE_PORT_OFFSET="40000")
    assert done.returncode == 2, done
    largest = 65535 - DEFAULT_MONGO_PORT
    assert done.stdout.strip() == (
        f"[novapulse] configuration error: NOVAPULSE_PORT_OFFSET: 40000 moves nx-27017 to port "
        f"{DEFAULT_MONGO_PORT + 40000} (over 65535); the largest offset is {largest}"
    ), done
    assert not (tmp_path / "data").exists()


@pytest.mark.e2e
def test_service_port_in_use_is_named_and_nothing_is_left_running(tmp_path: Path) -> None:
    offset = _offset()
    auth = next(s for s in discover() if s.name == "auth")
    port = int(auth.settings_cls.model_fields["http_port"].default) + offset
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        done = _cli(tmp_path, NOVAPULSE_PORT_OFFSET=str(offset))
    assert done.returncode == 1, done
    assert f"port {port} (auth-api) is in use: another stack? stop it or set NOVAPULSE_PORT_OFFSET" in done.stdout
    assert "redis-server" not in done.stdout, done.stdout
    assert "nx-27017" not in done.stdout, done.stdout


@pytest.mark.e2e
def test_data_dir_of_a_running_stack_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / ".stack.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("4242")
        lock.flush()
        done = _cli(tmp_path, NOVAPULSE_PORT_OFFSET=str(_offset()))
    assert done.returncode == 1, done
    assert "is used by another make run (pid 4242)" in done.stdout, done.stdout
    assert "nx-27017" not in done.stdout


@pytest.mark.e2e
def test_data_dir_that_cannot_be_a_directory_is_refused_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file, not a directory")
    done = _cli(tmp_path, NOVAPULSE_PORT_OFFSET=str(_offset()))
    assert done.returncode == 2, done
    assert done.stdout.startswith(f"[novapulse] configuration error: NOVAPULSE_DATA_DIR: cannot use {tmp_path}/data")
    assert len(done.stdout.strip().splitlines()) == 1, done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.e2e
def test_unknown_service_name_is_refused_with_the_installed_names(tmp_path: Path) -> None:
    done = subprocess.run(
        [*_devstack(tmp_path / "data", "auth", "nosuch")], env=_caller_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done
    installed = ", ".join(s.name for s in discover())
    assert done.stdout.strip() == (
        f"[novapulse] configuration error: --only: no service named nosuch; installed: {installed}"
    )


@pytest.mark.e2e
def test_bad_value_in_the_callers_environment_is_reported_with_the_services_own_line(tmp_path: Path) -> None:
    """The caller's value reaches the service (it wins over the dev default), so a bad one makes the service
    refuse to start: the runner shows the service's configuration error, stops the rest and exits 1."""
    env = _caller_env(NOVAPULSE_PORT_OFFSET=str(_offset()), WEBHOOK_ALLOWED_CIDRS="10.0.0.0/33")
    done = subprocess.run(
        _devstack(tmp_path / "data", "webhook"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done
    for role in ("api", "worker"):
        assert re.search(rf"webhook-{role}\s+EXITED: exited with 2", done.stdout), done.stdout
        assert re.search(rf"webhook-{role}\s+last log line: configuration error: WEBHOOK_ALLOWED_CIDRS", done.stdout)
    assert "no service process is left running" in done.stdout
    assert done.stdout.rstrip().endswith("stopped (exit status 1)"), done.stdout
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.unit
def test_loopback_urls_move_and_others_do_not() -> None:
    assert shift_loopback_url("http://127.0.0.1:8101/a/b?c=1", 5) == "http://127.0.0.1:8106/a/b?c=1"
    assert shift_loopback_url("http://localhost:8100", 5) == "http://localhost:8105"
    assert shift_loopback_url("http://[::1]:8100/x", 5) == "http://[::1]:8105/x"
    for same in ("https://auth.example.com:8443/jwks", "http://127.0.0.1/x", "not a url", "http://127.0.0.1:99999"):
        assert shift_loopback_url(same, 5) == same
    assert shift_loopback_url("http://127.0.0.1:8101", 0) == "http://127.0.0.1:8101"


@pytest.mark.unit
def test_every_port_derived_default_of_every_service_moves_with_the_offset(tmp_path: Path) -> None:
    offset = 30000
    specs = {s.name: s for s in discover()}
    local_url = re.compile(r"^[a-z]+://(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)")
    for spec in specs.values():
        ports = _PortShift(offset)
        env = dev_defaults(spec, offset, tmp_path, ports)
        for name, info in spec.settings_cls.model_fields.items():
            if isinstance(info.default, str) and local_url.match(info.default):
                assert name.upper() in env, f"{spec.name}: {name.upper()}={info.default} does not move"
        for name, value in env.items():
            found = local_url.match(value)
            assert not found or int(found[1]) > offset, (spec.name, name, value)
        assert all(p > offset for p in ports.ports), (spec.name, ports.ports)
    auth_port = int(specs["auth"].settings_cls.model_fields["http_port"].default) + offset
    webhook_env = dev_defaults(specs["webhook"], offset, tmp_path, _PortShift(offset))
    assert webhook_env["AUTH_JWKS_URL"] == f"http://127.0.0.1:{auth_port}/api/v1/auth/.well-known/jwks.json"
    notification_env = dev_defaults(specs["notification"], offset, tmp_path, _PortShift(offset))
    assert notification_env["MAIL_CATCHER_DIR"] == f"{tmp_path}/mail"
    assert notification_env["MAIL_CATCHER_PORT"] == str(1025 + offset)


@pytest.mark.unit
def test_caller_environment_wins_over_development_defaults_and_the_stack_owns_its_ports() -> None:
    defaults = {"WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8", "MAIL_CATCHER_DIR": "/d/mail", "HTTP_HOST": "127.0.0.1"}
    caller = {"WEBHOOK_ALLOWED_CIDRS": "", "mail_catcher_dir": "/mine", "HTTP_PORT": "1", "http_host": "0.0.0.0"}
    stack = {"HTTP_PORT": "8101", "WORKER_HTTP_PORT": "9101"}
    env = process_env(defaults, caller, stack)
    assert env["WEBHOOK_ALLOWED_CIDRS"] == ""  # an empty value tightens too
    assert env["mail_catcher_dir"] == "/mine"
    assert "MAIL_CATCHER_DIR" not in env
    assert env["http_host"] == "0.0.0.0"
    assert "HTTP_HOST" not in env
    assert env["HTTP_PORT"] == "8101"
    assert env["WORKER_HTTP_PORT"] == "9101"


# --- stale pid files of nx-27017 ----------------------------------------------------------------------


def _zombie() -> subprocess.Popen[bytes]:
    child = subprocess.Popen(["true"])
    asyncio.run(
        wait_until(
            lambda: Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z",
            message="an unreaped child",
        )
    )
    return child


@pytest.mark.integration
def test_pid_file_of_a_zombie_a_dead_or_a_reused_pid_never_blocks_nx_27017(tmp_path: Path) -> None:
    zombie = _zombie()
    try:
        for stale in (str(zombie.pid), "999999999", str(os.getpid()), "garbage"):
            port = free_port()
            server = mongo_server(port, tmp_path / f"run-{port}")
            assert server.pid_file is not None
            server.pid_file.write_text(stale)
            server.start()
            try:
                assert server.running
                assert server.pid_file.read_text().strip() == str(server.proc.pid if server.proc else "")
            finally:
                server.stop()
    finally:
        zombie.wait()


@pytest.mark.integration
def test_pid_file_of_a_live_nx_27017_is_named_and_kept(tmp_path: Path) -> None:
    port = free_port()
    server = mongo_server(port, tmp_path / "run").start()
    try:
        assert server.pid_file is not None
        assert server.proc is not None
        with pytest.raises(RuntimeError, match=f"nx-27017 pid {server.proc.pid} already runs"):
            release_stale_pid_file(server.pid_file, "nx-27017")
        assert server.pid_file.exists()
    finally:
        server.stop()


@pytest.mark.chaos
def test_server_killed_behind_its_back_restarts_on_the_same_pid_file(tmp_path: Path) -> None:
    server: ServerProcess = mongo_server(free_port(), tmp_path / "run").start()
    try:
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)  # not through server.kill(): nobody has reaped it yet
        asyncio.run(wait_until(lambda: not process_alive(server.proc.pid if server.proc else 0), message="death"))
        server.start()
        assert server.running
    finally:
        server.stop()


@pytest.mark.unit
@pytest.mark.parametrize("answer", [b"GET /api/v1/health/ready HTTP/1.1\r\n\r\n", b"garbage\r\n\r\n", b""])
def test_a_readiness_probe_answered_with_garbage_is_not_ready(answer: bytes) -> None:
    """What a probe reads when it connected to itself (TCP simultaneous open on an ephemeral port) or to a
    stranger: "not ready yet", never an exception that stops make run."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def reply() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(answer)

        thread = threading.Thread(target=reply, daemon=True)
        thread.start()
        assert _ready(f"http://127.0.0.1:{server.getsockname()[1]}") is False
        thread.join(timeout=5)


@pytest.mark.unit
def test_several_api_and_worker_processes_per_service_get_their_own_ports_and_names(tmp_path: Path) -> None:
    specs = {spec.name: spec for spec in discover()}
    step = INSTANCE_PORT_STEP
    assert roles(specs["auth"], 8101) == [("api", 8101), ("worker", 9101)]
    assert roles(specs["auth"], 8101, apis=2, workers=3) == [
        ("api", 8101),
        ("api-2", 8101 + step),
        ("worker", 9101),
        ("worker-2", 9101 + step),
        ("worker-3", 9101 + 2 * step),
    ]
    assert roles(specs["console"], 8100, apis=2, workers=2) == [("api", 8100), ("api-2", 8100 + step)]
    assert [role_of(name) for name in ("api", "api-2", "worker-3")] == ["api", "api", "worker"]
    stack = DevStack(
        tmp_path, [specs["auth"], specs["webhook"]], 0, {}, StopRequests(block=False), nginx="nginx", apis=2, workers=2
    )
    planned = dict(stack.plan())
    assert planned["auth-api-2"] == 8101 + step
    assert planned["webhook-worker-2"] == 9102 + step
    every = [port for _label, port in stack.plan()]
    assert len(every) == len(set(every)), "two processes of the stack on one port"
