"""Views of the example service: parse (declared models) → call the service layer → map to models.

Domain errors raised below are answered by this module's one table, :data:`PROBLEMS`.
"""

from __future__ import annotations

from aiohttp import web

from novapulse_runtime.errors import ErrorTable, Problem
from novapulse_runtime.paging import PageQuery, page
from novapulse_runtime.ratelimit import RateLimit, by_user
from novapulse_runtime.roles import MANAGERS
from novapulse_runtime.routes import Routes, path_id
from novapulse_runtime.tokens import principal, require_role

from .constants import API_PREFIX, NOTE_ID
from .errors import NoteLimitReached, NoteNotFound
from .models import NoteIn, NoteList, NoteOut
from .notes import NoteService

PROBLEMS: ErrorTable = {
    NoteNotFound: Problem(404),
    NoteLimitReached: Problem(409, title="Note limit reached"),
}
"""How each domain error of this service is answered (RFC 9457 problems)."""

WRITE_LIMIT = RateLimit("example-write-user", 60, 60, key=by_user)
"""60 writes a minute per user."""


def build_routes(notes: NoteService) -> Routes:
    """The service's routes under ``/api/v1/example``."""
    routes = Routes(prefix=API_PREFIX, tags=["example"], problems=PROBLEMS)

    @routes.post("/notes", body=NoteIn, response=NoteOut, status=201, auth=True, rate_limits=[WRITE_LIMIT])
    async def create_note(request: web.Request, body: NoteIn) -> NoteOut:
        """Keep a note in the caller's organisation."""
        who = principal(request)
        return NoteOut.of(await notes.create(who.org_id, who.user_id, body.text))

    @routes.get("/notes", query=PageQuery, response=NoteList, auth=True)
    async def list_notes(request: web.Request, query: PageQuery) -> NoteList:
        """The organisation's notes, newest first, one page at a time."""
        found = await notes.list(principal(request).org_id, query.after, query.fetch)
        items, cursor = page(found, query.limit, key=lambda n: n.id)
        return NoteList(items=[NoteOut.of(n) for n in items], next_cursor=cursor)

    @routes.get("/notes/{note_id}", response=NoteOut, auth=True)
    async def get_note(request: web.Request) -> NoteOut:
        """One note of the caller's organisation."""
        return NoteOut.of(await notes.get(principal(request).org_id, path_id(request, "note_id", NOTE_ID)))

    @routes.delete("/notes/{note_id}", auth=True, rate_limits=[WRITE_LIMIT])
    async def delete_note(request: web.Request) -> None:
        """Delete a note (owners and admins)."""
        who = require_role(request, *MANAGERS)
        await notes.delete(who.org_id, path_id(request, "note_id", NOTE_ID))

    return routes
