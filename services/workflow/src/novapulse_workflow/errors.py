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


class DuplicateTrigger(Conflict):
    """A manual trigger whose idempotency key a run started within the window already."""
