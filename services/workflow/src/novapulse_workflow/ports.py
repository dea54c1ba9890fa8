"""What the workflow service layer calls outside, as small Protocols (unit tests use fakes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Publication:
    """One event the engine publishes: catalogue ``type``, ``data``, the organisation, the subject (the run
    id) and the event id the engine derived."""

    type: str
    data: dict[str, Any]
    org_id: str
    subject: str
    event_id: str


class Effects(Protocol):
    """Publishes the events a run causes, each with the id the engine derived for it."""

    async def publish(self, type_: str, data: dict[str, Any], *, org_id: str, subject: str, event_id: str) -> None:
        """Publish one event (through the outbox). Publishing the same ``event_id`` twice must be harmless:
        consumers dedupe by id. Raises ``ValueError``/``ValidationError`` for data that does not fit the
        catalogue type."""
        ...

    async def publish_many(self, events: list[Publication]) -> None:
        """Publish several events in order, in one write where the outbox can; the same rules as
        :meth:`publish` (an event whose id was published before is harmless)."""
        ...


class Observer(Protocol):
    """What the engine reports for metrics (durations in seconds)."""

    def run_started(self) -> None: ...

    def run_finished(self, status: str) -> None: ...

    def step(self, type_: str, status: str, seconds: float) -> None: ...

    def schedule_lag(self, seconds: float) -> None: ...


class NoObserver:
    """Reports nothing (unit tests, tools)."""

    def run_started(self) -> None:
        return None

    def run_finished(self, status: str) -> None:
        return None

    def step(self, type_: str, status: str, seconds: float) -> None:
        return None

    def schedule_lag(self, seconds: float) -> None:
        return None
