"""Outgoing dependencies of the service layer, as small protocols (fakes for unit tests live in the tests)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from .planning import Budget

RecipientLimiter = Callable[[str, Budget], Awaitable[bool]]
"""``await limiter(address, budget)`` is ``True`` when one more e-mail of that budget to that address is
allowed now (and counts it)."""


class Observer(Protocol):
    """Where the notifier reports outcomes (metrics in production, nothing in unit tests)."""

    def delivery(self, channel: str, outcome: str) -> None: ...
    def attempt(self, relay: str, outcome: str) -> None: ...


class InboundEvent(Protocol):
    """What the worker needs of a bus event."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def org_id(self) -> str | None: ...
    @property
    def data(self) -> Any: ...
    @property
    def time(self) -> datetime: ...
