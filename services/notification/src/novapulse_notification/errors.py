"""Domain errors of the notification service (answered as problems by the table ``PROBLEMS`` in :mod:`.api`)."""

from __future__ import annotations

from novapulse_runtime.errors import Invalid, NotFound


class NotificationNotFound(NotFound):
    """No in-app notification with this id belongs to the caller (404 ``No such notification``)."""

    def __init__(self) -> None:
        super().__init__("No such notification")


class CriticalNotSwitchable(Invalid):
    """A request tries to switch off a channel of a critical category (422).

    :param refused: the ``category.channel`` pairs that were asked to go off.
    """

    def __init__(self, refused: list[str]) -> None:
        super().__init__(f"Critical notifications cannot be turned off: {', '.join(refused)}")
        self.refused = refused
