"""HTTP request and response models of the example service (they drive parsing, 422s and OpenAPI)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from novapulse_runtime.clock import from_ms

from .constants import MAX_TEXT_CHARS
from .repository import Note


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class NoteOut(BaseModel):
    id: str
    author_id: str
    text: str
    created_at: datetime

    @classmethod
    def of(cls, note: Note) -> NoteOut:
        return cls(id=note.id, author_id=note.author_id, text=note.text, created_at=from_ms(note.created_ms))


class NoteList(BaseModel):
    items: list[NoteOut]
    next_cursor: str | None = Field(description="Cursor of the next page; null on the last page")
