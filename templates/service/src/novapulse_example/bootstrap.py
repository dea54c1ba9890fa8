"""Composition root of the example service: wiring only, one function per role."""

from __future__ import annotations

from novapulse_runtime.process import ServiceSpec, periodic
from novapulse_runtime.routes import Routes
from novapulse_runtime.runtime import Runtime, Worker

from . import handlers
from .api import build_routes
from .notes import NoteService
from .repository import Repository
from .settings import ExampleSettings
from .worker import Retention


async def api(rt: Runtime) -> Routes:
    """The ``api`` role: the routes and the service layer behind them."""
    return build_routes(NoteService(await rt.repository(Repository)))


async def worker(rt: Runtime) -> list[Worker]:
    """The ``worker`` role: the event consumer and the retention loop."""
    settings = rt.settings
    assert isinstance(settings, ExampleSettings)
    repo = await rt.repository(Repository)
    retention = Retention(repo, settings.note_retention_days)
    consumer = rt.bus.consumer(handlers=handlers.handlers(repo))
    return [consumer.run, periodic("retention", settings.purge_interval_seconds, retention.purge_once)]


SPEC = ServiceSpec(
    name="example",
    settings_cls=ExampleSettings,
    api=api,
    worker=worker,
    package="novapulse_example",
    title="NovaPulse example",
)
