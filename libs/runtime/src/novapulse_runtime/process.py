"""Process entry point: ``python -m <service_package> api|worker|all``, with graceful shutdown.

On SIGTERM/SIGINT: readiness turns false at once, the listener stops taking connections, in-flight requests
and background work get ``SHUTDOWN_TIMEOUT`` seconds to finish, telemetry is flushed, pools are closed and
the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from .constants import FORCED_EXIT
from .health import ProcessState
from .http import create_app
from .logs import configure_logging
from .routes import Routes
from .runtime import Runtime, Worker
from .settings import ServiceSettings, load_settings

log = logging.getLogger("novapulse.process")

ROLES = ("api", "worker", "all")


ApiRoot = Callable[[Runtime], Awaitable[Routes]]
"""A service's composition root for the ``api`` role: wires what the views need and returns the routes."""
WorkerRoot = Callable[[Runtime], Awaitable[Sequence[Worker]]]
"""A service's composition root for the ``worker`` role: wires and returns the background workers."""
PagesRoot = Callable[[Runtime, web.Application], Awaitable[None]]
"""A composition root for pages outside the JSON API (the console's HTML): adds aiohttp routes, middlewares
and startup/cleanup hooks to the process's application before it starts (``api`` and ``all`` roles)."""


@dataclass(frozen=True)
class ServiceSpec:
    """A service as the process runner sees it.

    :param name: the service name (``SERVICE_NAME``; the stream, consumer group and metrics label).
    :param settings_cls: its settings class (a :class:`ServiceSettings`).
    :param api: composition root of the ``api`` role (``bootstrap.api``); ``None``: no routes of its own.
    :param worker: composition root of the ``worker`` role (``bootstrap.worker``); ``None``: no workers.
    :param pages: composition root of non-API pages served by the ``api`` role (``bootstrap.pages``: the
        console's HTML); they sit behind the same request-id, telemetry and error middlewares as the routes.
    :param package: the importable package (``python -m <package> api|worker|all``).
    :param title: the OpenAPI document's title.
    :param version: the OpenAPI document's ``info.version``.

    The runtime adds what every service has: the probe and metrics paths, the operations routes of the bus
    under the service's prefix (only with ``OPERATIONS_TOKEN``), and ``rt.tokens.authenticate`` as the
    authenticator of ``auth=True`` routes.
    """

    name: str
    settings_cls: type[ServiceSettings]
    api: ApiRoot | None = None
    worker: WorkerRoot | None = None
    pages: PagesRoot | None = None
    package: str = ""
    title: str = ""
    version: str = "0.1.0"


async def compose(spec: ServiceSpec, rt: Runtime) -> tuple[Routes | None, list[Worker]]:
    """Run the composition roots ``rt.role`` needs: the routes (with the bus's operations routes mounted
    under their prefix) and the background workers."""
    routes: Routes | None = None
    workers: list[Worker] = []
    if rt.serves_api and spec.api is not None:
        routes = await spec.api(rt)
        routes.extend(rt.bus.routes(routes.prefix))  # operator routes: served only with OPERATIONS_TOKEN
    if rt.runs_workers and spec.worker is not None:
        workers = list(await spec.worker(rt))
    return routes, workers


SUPERVISE_BACKOFF_MAX = 5.0
"""Longest pause, in seconds, before :func:`supervise` restarts a task that failed."""


def retry_pause(failures: int, first: float, cap: float) -> float:
    """Seconds to pause after ``failures`` failed attempts in a row: ``first * 2**failures``, at most ``cap``.
    The exponent stops at 8, so a long outage cannot overflow the float (``2**1100`` seconds would raise
    ``OverflowError`` and end the loop that was retrying)."""
    return min(cap, first * float(2 ** min(max(failures, 0), 8)))


async def supervise(
    name: str, work: Callable[[], Awaitable[None]], stop: asyncio.Event, *, until_return: bool = False
) -> None:
    """Run ``work()`` and restart it whenever it raises, so one unexpected error cannot silently end a
    background loop (the task of a loop that dies is otherwise only reported when garbage-collected).

    Each failure is logged at ERROR with its traceback (``background task failed; restarting``, field
    ``task`` = ``name``), then ``work`` restarts after a pause doubling from 0.1 s up to
    :data:`SUPERVISE_BACKOFF_MAX` (reset after a run of 30 s without failure). Returns when ``work`` returns
    and either ``until_return`` is set or ``stop`` is set; a ``work`` that returns early without ``stop`` is
    logged and restarted. With ``until_return`` a failure after ``stop`` is still restarted (for loops that
    must drain, such as acknowledgements). ``asyncio.CancelledError`` and ``KeyboardInterrupt`` propagate.
    """
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await work()
        except Exception as exc:
            if time.monotonic() - started > 30.0:
                failures = 0
            failures += 1
            log.error(
                "background task failed; restarting",
                exc_info=exc,
                extra={"task": name, "error": repr(exc)[:500], "failures": failures},
            )
            if stop.is_set() and not until_return:
                return
            delay = retry_pause(failures - 1, 0.1, SUPERVISE_BACKOFF_MAX)
            if until_return:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
            continue
        if until_return or stop.is_set():
            return
        log.error("background task returned before shutdown; restarting", extra={"task": name})


def periodic(name: str, interval_seconds: float, work: Callable[[], Awaitable[object]]) -> Worker:
    """A background worker that awaits ``work()`` at once and then every ``interval_seconds`` until ``stop``
    is set (the wait ends at once on ``stop``). A pass that raises is logged at WARNING with its traceback
    (``periodic task failed``, field ``task`` = ``name``) and tried again at the next interval: an outage of
    MongoDB or Redis never ends the loop. The worker's ``__qualname__`` is ``name`` (its task name)."""

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await work()
            except Exception as exc:
                log.warning("periodic task failed", exc_info=exc, extra={"task": name, "error": repr(exc)[:500]})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_seconds)

    run.__qualname__ = run.__name__ = name
    return run


def main(spec: ServiceSpec, argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=f"python -m {spec.package or spec.name}", description=f"NovaPulse {spec.name} service"
    )
    parser.add_argument("role", choices=ROLES, help="api: HTTP; worker: background work; all: both")
    args = parser.parse_args(argv)
    settings = load_settings(spec.settings_cls)
    configure_logging(settings.service_name, settings.log_level)
    code = asyncio.run(serve(spec, settings, args.role))
    sys.exit(code)


async def serve(spec: ServiceSpec, settings: ServiceSettings, role: str) -> int:
    rt = Runtime(settings, role, instrument=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal: exiting at once", extra={"signal": signal.Signals(signum).name})
            os._exit(FORCED_EXIT)
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        rt.health.state = ProcessState.DRAINING
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    routes, workers = await compose(spec, rt)
    app = create_app(
        settings=settings,
        metrics=rt.metrics,
        health=rt.health,
        tracer=rt.tracer,
        routes=routes,
        limiter=rt.limiter,
        authenticator=rt.tokens.authenticate,
        title=spec.title or None,
        version=spec.version,
    )
    if rt.serves_api and spec.pages is not None:
        await spec.pages(rt, app)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=settings.shutdown_timeout)
    await runner.setup()
    port = settings.listen_port(role)
    site = web.TCPSite(runner, settings.http_host, port, reuse_address=True)
    try:
        await site.start()
    except (OSError, OverflowError) as exc:
        log.error("cannot listen", extra={"host": settings.http_host, "port": port, "error": str(exc)})
        await runner.cleanup()
        await rt.close()
        return 1
    bound = _bound_port(runner, port)

    exit_code = 0
    tasks: list[asyncio.Task[None]] = []
    if workers:
        tasks = [
            asyncio.create_task(w(stop), name=f"{spec.name}-worker-{i}:{getattr(w, '__qualname__', 'worker')}")
            for i, w in enumerate(workers)
        ]

        def on_done(task: asyncio.Task[None]) -> None:
            nonlocal exit_code
            if task.cancelled() or stop.is_set():
                return
            exc = task.exception()
            log.error(
                "background worker stopped unexpectedly; shutting down",
                exc_info=exc,
                extra={"task": task.get_name(), "error": repr(exc)},
            )
            exit_code = 1
            rt.health.state = ProcessState.DRAINING
            stop.set()

        for t in tasks:
            t.add_done_callback(on_done)

    if rt.health.state is ProcessState.STARTING:
        rt.health.state = ProcessState.READY
    log.info(
        "listening",
        extra={"role": role, "url": f"http://{settings.http_host}:{bound}", "port": bound, "pid": os.getpid()},
    )
    await stop.wait()

    rt.health.state = ProcessState.DRAINING
    await asyncio.gather(runner.cleanup(), _finish(tasks, settings.shutdown_timeout))
    rt.tracing.shutdown()
    await rt.close()
    log.info("stopped", extra={"role": role, "exit_code": exit_code})
    return exit_code


async def _finish(tasks: list[asyncio.Task[None]], timeout: float) -> None:
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        log.warning("background work did not finish in time; cancelling", extra={"task": task.get_name()})
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=2)


def _bound_port(runner: web.AppRunner, default: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return default
