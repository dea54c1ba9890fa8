"""What the workflow service layer calls outside, as small Protocols (unit tests use fakes)."""

from __future__ import annotations

from typing import Any, Protocol


class Effects(Protocol):
    """Publishes the events a run causes, each with the id the engine derived for it."""

    async def publish(self, type_: str, data: dict[str, Any], *, org_id: str, subject: str, event_id: str) -> None:
        """Publish one event (through the outbox). Publishing the same ``event_id`` twice must be harmless:
        consumers dedupe by id. Raises ``ValueError``/``ValidationError`` for data that does not fit the
        catalogue type."""
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
