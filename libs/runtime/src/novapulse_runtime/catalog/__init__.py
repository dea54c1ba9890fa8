"""The event catalogue: every event type, the pydantic model of its ``data``, the service that produces it,
its schema version, and whether customers may receive it (public) or it never leaves the platform
(private command events, which may carry secrets such as an invite link).

Producers and consumers both read :data:`CATALOG`; the AsyncAPI document is generated from it. Each producing
service's types live in ``catalog/<service>.py`` as a tuple ``EVENTS`` (importing a module registers
nothing); :data:`CATALOG` is built here from the explicit list of those tuples. A new producing service adds
``catalog/<service>.py`` with its models and ``EVENTS``, and one entry below.
"""

from __future__ import annotations

from . import auth, notification, report, webhook, workflow
from .registry import Catalog, EventData, EventType

__all__ = ["CATALOG", "Catalog", "EventData", "EventType"]

CATALOG = Catalog(auth.EVENTS, notification.EVENTS, report.EVENTS, webhook.EVENTS, workflow.EVENTS)
"""The catalogue of the platform: the types of every producing service."""
