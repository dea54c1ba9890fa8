"""Roles inside an organisation, as the auth service grants them and every access token carries them
(claim ``role``)."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """A member's role in its organisation. ``owner``: one per organisation, may do everything; ``admin``:
    manages members, invites and integrations; ``member``: uses the product."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


MANAGERS: tuple[str, ...] = (Role.OWNER.value, Role.ADMIN.value)
"""Roles that may change an organisation's settings, members and integrations."""
