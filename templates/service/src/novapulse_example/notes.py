"""Use cases of notes: domain logic only. Raises domain errors (``errors.py``); knows no HTTP."""

from __future__ import annotations

from .constants import MAX_NOTES_PER_ORG
from .errors import NoteLimitReached, NoteNotFound
from .repository import Note, Repository


class NoteService:
    """Notes of an organisation's members. Every method takes the caller's organisation: nothing crosses
    organisations."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def create(self, org_id: str, author_id: str, text: str) -> Note:
        """Keep a note.

        :raises NoteLimitReached: the organisation has ``MAX_NOTES_PER_ORG`` notes already.
        """
        if await self.repo.count_notes(org_id) >= MAX_NOTES_PER_ORG:
            raise NoteLimitReached(f"An organisation keeps at most {MAX_NOTES_PER_ORG} notes")
        return await self.repo.insert_note(org_id, author_id, text)

    async def get(self, org_id: str, note_id: str) -> Note:
        """One note.

        :raises NoteNotFound: no such note in ``org_id``.
        """
        note = await self.repo.get_note(org_id, note_id)
        if note is None:
            raise NoteNotFound("No such note")
        return note

    async def list(self, org_id: str, after: str | None, count: int) -> list[Note]:
        """Up to ``count`` notes, newest first, after the note id ``after`` (a page read with ``limit + 1``)."""
        return await self.repo.list_notes(org_id, after, count)

    async def delete(self, org_id: str, note_id: str) -> None:
        """Delete a note.

        :raises NoteNotFound: no such note in ``org_id``.
        """
        if not await self.repo.delete_note(org_id, note_id):
            raise NoteNotFound("No such note")
