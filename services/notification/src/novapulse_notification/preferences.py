"""Pure logic of notification preferences: per category and channel on/off; critical categories stay on."""

from __future__ import annotations

from collections.abc import Mapping

from .constants import CRITICAL_CATEGORIES, Category, Channel

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
