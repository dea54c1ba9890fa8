"""Ports: the outgoing dependencies of the report service layer, as small protocols.

:class:`FileStore` keeps report files (parts while a report runs, then the finished file); its
implementation is :class:`~novapulse_report.filestore.GridFsStore` (MongoDB GridFS, the default store).
:class:`Outbox` records events with the state change that caused them (``rt.bus.outbox()``).
Unit-test fakes live in the tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Protocol

from novapulse_runtime.bus.ports import OutboxPort


class FileStore(Protocol):
    """Named binary files, written and read as streams (memory bounded by one piece)."""

    async def write(self, name: str, pieces: AsyncIterable[bytes], metadata: dict[str, Any]) -> int:
        """Store ``pieces`` as file ``name`` (replacing any file of that name); returns its size in bytes."""
        ...

    def read(self, name: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive; ``None``: to the end) of file ``name``, piece by piece.

        :raises FileNotFoundError: no file ``name``.
        """
        ...

    async def delete(self, name: str) -> None:
        """Delete file ``name`` (nothing when there is none)."""
        ...

    async def delete_files(self, report_id: str, kind: str | None = None) -> int:
        """Delete the files written with metadata ``report_id`` (and ``kind``, when given: ``part``, ``file``,
        ``manifest``); returns how many went."""
        ...


Outbox = OutboxPort
"""The runtime's outbox port (:class:`novapulse_runtime.bus.ports.OutboxPort`)."""


class Observer(Protocol):
    """Where generation and retention report what they did (Prometheus in production)."""

    def run(self, type_: str, format_: str, outcome: str, seconds: float) -> None:
        """A run of a report ended with ``outcome`` after ``seconds``."""
        ...

    def claimed(self, waited_seconds: float, first: bool) -> None:
        """A report was claimed ``waited_seconds`` after its request (``first``: its first claim)."""
        ...

    def rows_written(self, format_: str, count: int) -> None:
        """``count`` rows went into a part."""
        ...

    def retention(self, expired: int, bytes_stored: int) -> None:
        """A retention pass expired ``expired`` reports; ``bytes_stored`` bytes of files remain."""
        ...
