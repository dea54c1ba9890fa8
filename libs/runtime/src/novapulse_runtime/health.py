"""Health checks: each dependency with its own timeout; liveness touches none; readiness follows the
process state (starting, ready, draining) and the required dependencies."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psutil

from .metrics import Metrics

CheckFn = Callable[[], Awaitable[dict[str, Any] | None]]


class ProcessState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"


@dataclass(frozen=True)
class Check:
    name: str
    fn: CheckFn
    required: bool = True
    timeout: float = 1.0


class Health:
    def __init__(self, metrics: Metrics, default_timeout: float) -> None:
        self.state = ProcessState.STARTING
        self.checks: list[Check] = []
        self._metrics = metrics
        self._default_timeout = default_timeout

    def add(self, name: str, fn: CheckFn, *, required: bool = True, timeout: float | None = None) -> None:
        self.checks.append(Check(name, fn, required, timeout or self._default_timeout))

    async def _run(self, check: Check) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(check.timeout):
                details = await check.fn()
            result: dict[str, Any] = {"status": "up"}
            if details:
                result.update(details)
        except TimeoutError:
            result = {"status": "down", "error": f"timed out after {check.timeout:g}s"}
        except Exception as exc:
            result = {"status": "down", "error": type(exc).__name__ + (f": {exc}" if str(exc) else "")}
        result["required"] = check.required
        result["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
        self._metrics.health_status.labels(check.name).set(1 if result["status"] == "up" else 0)
        return result

    async def report(self, *, required_only: bool = False) -> tuple[bool, dict[str, Any]]:
        """Run the checks concurrently. Healthy when the state is ready and every required check is up."""
        checks = [c for c in self.checks if c.required or not required_only]
        results = await asyncio.gather(*(self._run(c) for c in checks))
        details = {c.name: r for c, r in zip(checks, results, strict=True)}
        deps_ok = all(r["status"] == "up" for c, r in zip(checks, results, strict=True) if c.required)
        ok = deps_ok and self.state is ProcessState.READY
        status = "up" if ok else ("degraded" if self.state is ProcessState.READY else self.state.value)
        if self.state is ProcessState.READY and not deps_ok:
            status = "down"
        return ok, {"status": status, "state": self.state.value, "checks": details}


def memory_check(limit_mb: int) -> CheckFn:
    proc = psutil.Process()

    async def check() -> dict[str, Any]:
        rss = proc.memory_info().rss
        used_mb = round(rss / 1_048_576, 1)
        if used_mb > limit_mb:
            raise RuntimeError(f"rss {used_mb} MiB over limit {limit_mb} MiB")
        return {"rss_mb": used_mb, "limit_mb": limit_mb}

    return check
