"""Domain errors of the example service. The service layer raises them; only ``api.PROBLEMS`` says how
each is answered over HTTP."""

from __future__ import annotations

from novapulse_runtime.errors import LimitReached, NotFound


class NoteNotFound(NotFound):
    """No note with that id in the caller's organisation."""


class NoteLimitReached(LimitReached):
    """The organisation keeps ``MAX_NOTES_PER_ORG`` notes already."""
