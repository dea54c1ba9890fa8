"""Composition root of the report service: wiring only, one function per role."""

from __future__ import annotations

import os
import socket

from novapulse_runtime.process import ServiceSpec, periodic
from novapulse_runtime.routes import Routes
from novapulse_runtime.runtime import Runtime, Worker

from . import handlers
from .api import build_routes
from .datasets import DataSets
from .filestore import GridFsStore
from .generation import GenerationConfig, Generator
from .observer import MetricsObserver
from .refusals import Refusals
from .reports import Limits, ReportService
from .repository import Repository
from .settings import ReportSettings
from .signing import LinkSigner
from .worker import GenerationWorker, RetentionWorker


def settings_of(rt: Runtime) -> ReportSettings:
    settings = rt.settings
    assert isinstance(settings, ReportSettings)
    return settings


async def files(rt: Runtime) -> GridFsStore:
    """The file store (GridFS in the service's database), once per process."""

    async def make() -> GridFsStore:
        store = GridFsStore(rt.db)
        await store.ensure_indexes()
        return store

    return await rt.shared("files", make)


async def reports(rt: Runtime) -> ReportService:
    """The report use cases, once per process."""
    s = settings_of(rt)

    async def make() -> ReportService:
        limits = Limits(
            max_in_flight=s.max_in_flight_per_org,
            max_rows=s.max_rows_per_report,
            max_bytes=s.max_bytes_per_org,
            max_range_days=s.max_range_days,
            dedup_window_ms=s.dedup_window_seconds * 1000,
        )
        return ReportService(await rt.repository(Repository), await files(rt), signer(s), limits)

    return await rt.shared("reports", make)


def signer(s: ReportSettings) -> LinkSigner:
    return LinkSigner(s.report_download_secret.get_secret_value().encode())


async def api(rt: Runtime) -> Routes:
    """The ``api`` role: the routes and the service layer behind them."""
    return build_routes(await reports(rt), settings_of(rt).link_ttl_seconds)


async def worker(rt: Runtime) -> list[Worker]:
    """The ``worker`` role: the consumer (data sets, ``report.requested``), the generation loop, the
    retention job and the outbox relay."""
    s = settings_of(rt)
    repo, store = await rt.repository(Repository), await files(rt)
    outbox = rt.bus.outbox()
    lease_ms = int(s.lease_seconds * 1000)
    config = GenerationConfig(
        batch_rows=s.batch_rows,
        chunk_rows=s.chunk_rows,
        lease_ms=lease_ms,
        file_ttl_ms=int(s.file_ttl_hours * 3_600_000),
        max_rows=s.max_rows_per_report,
    )
    owner = f"{socket.gethostname()}-{os.getpid()}"
    observer = MetricsObserver(rt.metrics)
    generator = Generator(repo, store, outbox, signer(s), config, owner, observer)
    retention = RetentionWorker(repo, store, observer, s.retention_interval_seconds)
    table = handlers.handlers(DataSets(repo), await reports(rt), Refusals(repo, outbox))
    return [
        rt.bus.consumer(handlers=table).run,
        GenerationWorker(repo, generator, lease_ms, s.poll_interval_seconds, rt.tracer).run,
        periodic("retention", s.retention_interval_seconds, retention.purge_once),
        outbox.relay,
    ]


SPEC = ServiceSpec(
    name="report",
    settings_cls=ReportSettings,
    api=api,
    worker=worker,
    package="novapulse_report",
    title="NovaPulse report",
)
