"""Composition root of the workflow service: wiring only, one function per role."""

from __future__ import annotations

import os
import socket

from novapulse_runtime.process import ServiceSpec, periodic
from novapulse_runtime.routes import Routes
from novapulse_runtime.runtime import Runtime, Worker

from . import handlers
from .api import build_routes
from .app_events import AppEvents
from .definitions import DefinitionService
from .effects import OutboxEffects
from .engine import Engine
from .observer import MetricsObserver
from .repository import Repository
from .runs import RunService
from .settings import WorkflowSettings
from .triggers import Triggers
from .worker import Housekeeper, Scheduler


async def api(rt: Runtime) -> Routes:
    """The ``api`` role: the routes and the service layer behind them (cancel events go to the outbox)."""
    repo = await rt.repository(Repository)
    definitions = DefinitionService(repo)
    return build_routes(definitions, RunService(repo, definitions, OutboxEffects(rt.bus.outbox())), AppEvents(repo))


async def worker(rt: Runtime) -> list[Worker]:
    """The ``worker`` role: the scheduler and engine, the consumer (triggers and waits), the outbox relay."""
    settings = rt.settings
    assert isinstance(settings, WorkflowSettings)
    repo = await rt.repository(Repository)
    outbox = rt.bus.outbox()
    owner = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
    effects = OutboxEffects(outbox)
    observer = MetricsObserver(rt)
    engine = Engine(repo, effects, owner, int(settings.run_lease_seconds * 1000), observer=observer)
    scheduler = Scheduler(
        repo,
        engine,
        settings.run_slots,
        settings.poll_interval_seconds,
        settings.run_slots_per_org,
        org_cap=settings.org_runs_in_flight,
    )
    housekeeper = Housekeeper(repo, observer, settings.run_retention_days, settings.housekeeping_interval_seconds)
    table = handlers.handlers(Triggers(repo, effects, on_start=scheduler.wake))
    return [
        rt.bus.consumer(handlers=table).run,
        scheduler.run,
        periodic("housekeeping", housekeeper.interval_seconds, housekeeper.once),
        outbox.relay,
    ]


SPEC = ServiceSpec(
    name="workflow",
    settings_cls=WorkflowSettings,
    api=api,
    worker=worker,
    package="novapulse_workflow",
    title="NovaPulse workflow",
)
