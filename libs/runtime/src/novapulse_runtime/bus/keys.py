"""Stream and key names of one bus namespace."""

from __future__ import annotations

from dataclasses import dataclass

from .constants import (
    DEAD_SEGMENT,
    DEFAULT_NAMESPACE,
    EVENTS_SEGMENT,
    IDEMPOTENCY_SEGMENT,
    OUTBOX_LOCK_SEGMENT,
    OUTBOX_WAKE_SEGMENT,
    REPLAY_SEGMENT,
)


@dataclass(frozen=True, slots=True)
class Keys:
    """Every Redis name the bus uses, under one namespace (the ``EVENTS_NAMESPACE`` setting; ``novapulse`` in
    production)."""

    namespace: str = DEFAULT_NAMESPACE

    def stream(self, source: str) -> str:
        """The stream a producing service publishes to (``novapulse:events:<source>``)."""
        return f"{self.namespace}:{EVENTS_SEGMENT}:{source}"

    def dead(self, group: str) -> str:
        """Dead letters of one consumer group (``novapulse:dead:<group>``; its own slot on a cluster)."""
        return f"{self.namespace}:{DEAD_SEGMENT}:{group}"

    def replay(self, group: str) -> str:
        """Replayed dead letters; read only by ``group``."""
        return f"{self.namespace}:{REPLAY_SEGMENT}:{group}"

    def seen(self, group: str, event_id: str) -> str:
        """The idempotency key of one event in one group (``novapulse:seen:{<group>}:<event id>``): the hash
        tag ``{<group>}`` puts every key of a group in one Redis Cluster slot, so one script claims a whole
        batch. (Before the cluster layout the key was ``novapulse:seen:<group>:<event id>``; such keys are
        ignored and expire.)"""
        return f"{self.namespace}:{IDEMPOTENCY_SEGMENT}:{{{group}}}:{event_id}"

    def outbox_lock(self, service: str, database: str) -> str:
        return f"{self.namespace}:{OUTBOX_LOCK_SEGMENT}:{service}:{database}"

    def outbox_wake(self, service: str, database: str) -> str:
        return f"{self.namespace}:{OUTBOX_WAKE_SEGMENT}:{service}:{database}"
