"""The event catalogue: every event type, the pydantic model of its ``data``, the service that produces it,
its schema version, and whether customers may receive it (public) or it never leaves the platform
(private command events, which may carry secrets such as an invite link).

Producers and consumers both read this module; the AsyncAPI document is generated from it. Each producing
service's types live in ``catalog/<service>.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

STREAM_PREFIX = "novapulse:events:"


class EventData(BaseModel):
    """Base of every event's ``data``: unknown fields are ignored so producers can add fields safely."""

    model_config = ConfigDict(extra="ignore", frozen=True)


@dataclass(frozen=True)
class EventType:
    name: str
    model: type[EventData]
    source: str
    public: bool
    version: int = 1
    description: str = ""

    @property
    def stream(self) -> str:
        return stream_name(self.source)


_REGISTRY: dict[str, EventType] = {}


def stream_name(source: str) -> str:
    """The stream a producing service publishes to."""
    return f"{STREAM_PREFIX}{source}"


def register(name: str, model: type[EventData], *, source: str, public: bool, version: int = 1) -> EventType:
    existing = _REGISTRY.get(name)
    et = EventType(name, model, source, public, version, (model.__doc__ or "").strip())
    if existing is not None and existing != et:
        raise ValueError(f"event type {name} registered twice with different definitions")
    _REGISTRY[name] = et
    return et


def lookup(name: str) -> EventType | None:
    _load()
    return _REGISTRY.get(name)


def all_types() -> list[EventType]:
    _load()
    return sorted(_REGISTRY.values(), key=lambda e: e.name)


def public_types() -> list[EventType]:
    return [e for e in all_types() if e.public]


def types_from(source: str) -> list[EventType]:
    return [e for e in all_types() if e.source == source]


def _load() -> None:
    from . import auth, notification, report, webhook  # noqa: F401 - registration side effect
