"""Notification preferences: per category and channel on/off, critical categories always on (pure rules),
and the use cases of reading and changing a user's preferences (:class:`Preferences`)."""

from __future__ import annotations

from collections.abc import Mapping

from .constants import CRITICAL_CATEGORIES, Category, Channel
from .errors import CriticalNotSwitchable
from .repository import Repository

Matrix = dict[str, dict[str, bool]]


def defaults() -> Matrix:
    """Everything on."""
    return {c.value: {ch.value: True for ch in Channel} for c in Category}


def merge(stored: Mapping[str, Mapping[str, bool]] | None) -> Matrix:
    """Stored choices over the defaults; critical categories forced on whatever was stored."""
    matrix = defaults()
    for category, channels in (stored or {}).items():
        if category not in matrix:
            continue
        for channel, on in channels.items():
            if channel in matrix[category]:
                matrix[category][channel] = bool(on)
    for category in CRITICAL_CATEGORIES:
        matrix[category.value] = {ch.value: True for ch in Channel}
    return matrix


def turned_off_critical(requested: Mapping[str, Mapping[str, bool]]) -> list[str]:
    """The ``category.channel`` pairs a request tries to switch off although they are critical."""
    return [
        f"{category}.{channel}"
        for category, channels in requested.items()
        if category in {c.value for c in CRITICAL_CATEGORIES}
        for channel, on in channels.items()
        if not on
    ]


def allows(
    stored: Mapping[str, Mapping[str, bool]] | None, category: Category, channel: Channel, critical: bool
) -> bool:
    """Whether a notification of ``category`` may go out on ``channel``. Critical ones always may."""
    if critical or category in CRITICAL_CATEGORIES:
        return True
    return merge(stored)[category.value][channel.value]


class Preferences:
    """A user's stored preferences, read and changed (the worker reads them through :func:`allows`)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def get(self, org_id: str, user_id: str) -> Matrix:
        """The user's effective preferences: category → channel → on, every category and channel present,
        critical categories on."""
        stored = await self.repo.get_preferences(org_id, user_id)
        return merge(stored.get("channels") if stored else None)

    async def update(self, org_id: str, user_id: str, requested: Mapping[str, Mapping[str, bool]]) -> Matrix:
        """Switch the channels named in ``requested`` (category → channel → on) and keep every other setting;
        returns the effective preferences afterwards.

        :raises CriticalNotSwitchable: ``requested`` switches off a channel of a critical category (nothing is
            changed then).
        """
        refused = turned_off_critical(requested)
        if refused:
            raise CriticalNotSwitchable(refused)
        current = await self.get(org_id, user_id)
        for category, switches in requested.items():
            current[category].update(switches)
        await self.repo.put_preferences(org_id, user_id, merge(current))
        return await self.get(org_id, user_id)
