"""Use cases of the in-app inbox: a user's notifications, newest first, marked read one by one or all at once.

Every call is scoped by the caller's organisation and user: another user's notification is not found.
"""

from __future__ import annotations

from dataclasses import dataclass

from novapulse_runtime.documents import Doc
from novapulse_runtime.paging import PageQuery, page

from .errors import NotificationNotFound
from .repository import Repository


@dataclass(frozen=True)
class NoticePage:
    """One page of notices (stored documents, newest first), the user's unread count over all their notices,
    and the opaque cursor of the next page (``None`` on the last page)."""

    items: list[Doc]
    unread_count: int
    next_cursor: str | None


class Inbox:
    """The in-app notifications of one user (stored by the worker, see :class:`~.notifier.Notifier`)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def page(self, org_id: str, user_id: str, query: PageQuery, *, unread_only: bool = False) -> NoticePage:
        """The page of the user's notices after ``query.cursor`` (``query.limit`` at most; only unread ones
        when ``unread_only``), cut by the one paging rule of :func:`novapulse_runtime.paging.page`."""
        docs = await self.repo.list_notices(org_id, user_id, query.after, query.fetch, unread_only)
        items, next_cursor = page(docs, query.limit, lambda d: str(d["sort_key"]))
        return NoticePage(items, await self.repo.unread_count(org_id, user_id), next_cursor)

    async def unread_count(self, org_id: str, user_id: str) -> int:
        """How many of the user's notices are unread."""
        return await self.repo.unread_count(org_id, user_id)

    async def read(self, org_id: str, user_id: str, notice_id: str) -> Doc:
        """Mark one notice read (its first read time is kept) and return it.

        :raises NotificationNotFound: the user has no notice ``notice_id``.
        """
        doc = await self.repo.mark_read(org_id, user_id, notice_id)
        if doc is None:
            raise NotificationNotFound()
        return doc

    async def read_all(self, org_id: str, user_id: str) -> int:
        """Mark every unread notice of the user read; returns how many changed."""
        return await self.repo.mark_all_read(org_id, user_id)
