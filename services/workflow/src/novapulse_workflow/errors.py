"""Domain errors of the workflow service. The service layer raises them; only ``api.PROBLEMS`` says how each
is answered over HTTP."""

from __future__ import annotations

from novapulse_runtime.errors import Conflict, Invalid, LimitReached, NotFound


class DefinitionNotFound(NotFound):
    """No definition with that id (or version) in the caller's organisation."""


class RunNotFound(NotFound):
    """No run with that id in the caller's organisation."""


class DefinitionInvalid(Invalid):
    """A definition breaks a rule of the language; ``errors`` lists ``{location, field, message, type}`` with
    the JSON path of each fault (``steps.2.next``)."""


class DefinitionLimitReached(LimitReached):
    """The organisation keeps ``MAX_DEFINITIONS_PER_ORG`` definitions already."""


class DefinitionDisabled(Conflict):
    """A manual trigger of a disabled definition."""


class RunFinished(Conflict):
    """Cancelling a run that has ended already."""


class UnknownStep(Invalid):
    """A rerun from a step key the definition does not have."""


class NotAnApplicationEventType(Invalid):
    """``POST /events`` with a type of the platform catalogue or of a platform domain (``user.*``), or not
    lower-case dotted words; ``errors`` names the field."""


class UnstorableData(Invalid):
    """Posted data a document cannot hold (a key with a NUL character or a leading ``$``, a lone surrogate);
    ``errors`` names the path."""


class EventTooLarge(Invalid):
    """``POST /events`` with ``data`` over ``MAX_APP_EVENT_BYTES`` bytes as JSON (413)."""


class EventIdReused(Conflict):
    """``POST /events`` with an event id (or ``Idempotency-Key``) used before for a different event (409: the
    request is valid in itself; it conflicts with the event stored under that id)."""


class BadIdempotencyKey(Invalid):
    """An ``Idempotency-Key`` header that is empty or longer than ``MAX_IDEMPOTENCY_KEY`` characters."""


class DuplicateTrigger(Conflict):
    """A manual trigger whose idempotency key a run started within the window already."""
