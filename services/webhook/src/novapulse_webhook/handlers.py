"""Event handling of the worker: every platform event (``"*"``) is fanned out to the organisation's
subscribed webhook endpoints (:meth:`.worker.DeliveryWorker.on_event`); a workflow's ``emit`` step
(``workflow.emitted``) reaches them as the application event it carries."""

from __future__ import annotations

from typing import Any

from novapulse_runtime.bus import Event, Handler
from novapulse_runtime.catalog import EventData
from novapulse_runtime.catalog.workflow import Emitted

from .worker import DeliveryWorker


def event_data(event: Event) -> dict[str, Any]:
    """The event's data as a JSON object (a catalogue model dumped in JSON mode; a bare value as
    ``{"value": ...}``)."""
    data = event.data
    if isinstance(data, EventData):
        return data.model_dump(mode="json")
    return dict(data) if isinstance(data, dict) else {"value": data}


def handlers(delivery: DeliveryWorker) -> dict[str, Handler]:
    """The table event type → handler of the worker's consumer: every public platform event is fanned out
    as it is; ``workflow.emitted`` (a workflow's ``emit`` step) is delivered as the application event it
    carries, under the organisation's own type name and with its own data."""

    async def fan_out(event: Event) -> None:
        await delivery.on_event(event.id, event.org_id or "", event.type, event_data(event), event.time)

    async def deliver_emitted(event: Event) -> None:
        emitted = event.data_as(Emitted)
        await delivery.on_event(event.id, event.org_id or "", emitted.type, emitted.data, event.time, application=True)

    return {"*": fan_out, "workflow.emitted": deliver_emitted}
