"""Domain errors of the report service. The service layer raises them; only ``api.PROBLEMS`` says how each
is answered over HTTP."""

from __future__ import annotations

from novapulse_runtime.errors import Conflict, Forbidden, Gone, Invalid, LimitReached, NotFound


class ReportNotFound(NotFound):
    """No report with that id in the caller's organisation."""


class InvalidParameters(Invalid):
    """The report's parameters break a rule: unknown type or filter, bad time zone, time range missing,
    reversed or too long."""


class TooManyRows(Invalid):
    """The report would hold more rows than ``MAX_ROWS_PER_REPORT``: narrow the range or add filters."""


class RoleNotAllowed(Forbidden):
    """The caller's role may not ask for this report type."""


class TooManyInFlight(LimitReached):
    """The organisation has ``MAX_IN_FLIGHT_PER_ORG`` reports queued or running."""


class StorageFull(Conflict):
    """The organisation's stored files reach ``MAX_BYTES_PER_ORG``: delete reports first."""


class NotReady(Conflict):
    """The report has no file (yet, or any more: it failed or was cancelled)."""


class LinkInvalid(Forbidden):
    """The download link's signature does not check out (tampered with, or for another report)."""


class LinkExpired(Gone):
    """The download link, or the report's file, has expired."""


class RangeNotSatisfiable(Invalid):
    """A ``Range`` outside the file (answered 416 with ``Content-Range: bytes */<size>``)."""
