"""Helpers of the workflow service's tests."""

from __future__ import annotations

from typing import Any


class FakeEffects:
    """Records every published effect; an effect whose type is in ``crash_after`` is recorded, then raises
    (once per listed type): a crash between the effect and the journal write."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, dict[str, Any]]] = []
        self.crash_after: set[str] = set()

    async def publish(self, type_: str, data: dict[str, Any], *, org_id: str, subject: str, event_id: str) -> None:
        self.published.append((event_id, type_, data))
        if type_ in self.crash_after:
            self.crash_after.discard(type_)
            raise RuntimeError("crash after the effect")

    def types(self) -> list[str]:
        return [t for _, t, _ in self.published]
