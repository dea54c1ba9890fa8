"""One auth API process on its own redis-server and nx-27017, for the benchmarks of this package."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet

from novapulse_devkit.servers import free_port, mongo_server, port_open, redis_server

P = "/api/v1/auth"
START_TIMEOUT = 30.0  # seconds the API may take to listen


@dataclass(frozen=True)
class AuthStack:
    url: str  # the API's base URL (no path)
    redis_url: str
    mongo_url: str
    mongo_db: str
    namespace: str  # EVENTS_NAMESPACE of the process


@contextmanager
def auth_api(prefix: str, mongo_db: str, *, email_verification: bool) -> Iterator[AuthStack]:
    """Start redis-server, nx-27017 and ``python -m novapulse_auth api`` (rate limiter off) in a temporary
    folder, yield their addresses, stop all three afterwards. Raises ``SystemExit`` with the API's log when
    it does not listen within :data:`START_TIMEOUT` seconds."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        run = Path(tmp)
        redis = redis_server(free_port(), run / "redis").start()
        mongo = mongo_server(free_port(), run / "mongo").start()
        port = free_port()
        stack = AuthStack(
            f"http://127.0.0.1:{port}",
            f"redis://127.0.0.1:{redis.port}/0",
            f"mongodb://127.0.0.1:{mongo.port}",
            mongo_db,
            f"{prefix.strip('-').replace('-', '')}{os.getpid()}",
        )
        env = dict(os.environ)
        env.update(
            {
                "REDIS_URL": stack.redis_url,
                "MONGO_URL": stack.mongo_url,
                "MONGO_DB": mongo_db,
                "HTTP_HOST": "127.0.0.1",
                "HTTP_PORT": str(port),
                "AUTH_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
                "AUTH_JWKS_URL": f"{stack.url}{P}/.well-known/jwks.json",
                "EVENTS_NAMESPACE": stack.namespace,
                "RATE_LIMIT_ENABLED": "false",
                "REGISTRATION_EMAIL_VERIFICATION": "true" if email_verification else "false",
                "LOG_LEVEL": "WARNING",
            }
        )
        log = open(run / "auth.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([sys.executable, "-m", "novapulse_auth", "api"], env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not port_open(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"auth did not start:\n{(run / 'auth.log').read_text()}")
                time.sleep(0.05)
            yield stack
        finally:
            proc.terminate()
            proc.wait(20)
            log.close()
            mongo.stop()
            redis.stop()
