"""The building blocks of the event catalogue: :class:`EventData` (base of every event's ``data`` model),
:class:`EventType` (one type's definition) and :class:`Catalog` (the set of types the bus knows)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict


class EventData(BaseModel):
    """Base of every event's ``data``: unknown fields are ignored so producers can add fields safely."""

    model_config = ConfigDict(extra="ignore", frozen=True)


@dataclass(frozen=True)
class EventType:
    """One event type: its ``name`` (``user.registered``), the pydantic ``model`` of its ``data``, the
    producing service ``source`` (the type travels on that service's stream, ``<namespace>:events:<source>``
    — see :class:`~novapulse_runtime.bus.keys.Keys`), whether customers may receive it (``public``; private
    command events may carry secrets), its schema ``version`` and a ``description`` (default: the model's
    docstring)."""

    name: str
    model: type[EventData]
    source: str
    public: bool
    version: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        if not self.description:
            object.__setattr__(self, "description", (self.model.__doc__ or "").strip())


class Catalog:
    """Every event type the bus knows, built from explicit groups of types (one tuple per producing
    service, ``catalog/<service>.py``'s ``EVENTS``). Raises ``ValueError`` when two definitions share a
    name. Immutable once built except through :meth:`add`."""

    def __init__(self, *groups: Iterable[EventType]) -> None:
        self._types: dict[str, EventType] = {}
        for group in groups:
            self.add(*group)

    def add(self, *types: EventType) -> None:
        """Add types (a benchmark's or a test's own, explicitly, before its bus runs). Adding a type again
        with the same definition does nothing; with a different one raises ``ValueError``."""
        for et in types:
            existing = self._types.get(et.name)
            if existing is not None and existing != et:
                raise ValueError(f"event type {et.name} defined twice with different definitions")
            self._types[et.name] = et

    def lookup(self, name: str) -> EventType | None:
        """The type called ``name``; ``None`` when the catalogue has none."""
        return self._types.get(name)

    def all_types(self) -> list[EventType]:
        """Every type, sorted by name."""
        return sorted(self._types.values(), key=lambda e: e.name)

    def sources(self) -> set[str]:
        """The producing services of every type (each has one stream)."""
        return {et.source for et in self._types.values()}
