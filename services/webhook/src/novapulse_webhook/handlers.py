"""Event handling of the worker: every platform event (``"*"``) is fanned out to the organisation's
subscribed webhook endpoints (:meth:`.worker.DeliveryWorker.on_event`)."""

from __future__ import annotations

from typing import Any

from novapulse_runtime.bus import Event, Handler
from novapulse_runtime.catalog import EventData

from .worker import DeliveryWorker


def event_data(event: Event) -> dict[str, Any]:
    """The event's data as a JSON object (a catalogue model dumped in JSON mode; a bare value as
    ``{"value": ...}``)."""
    data = event.data
    if isinstance(data, EventData):
        return data.model_dump(mode="json")
    return dict(data) if isinstance(data, dict) else {"value": data}


def handlers(delivery: DeliveryWorker) -> dict[str, Handler]:
    """The table event type → handler of the worker's consumer."""

    async def fan_out(event: Event) -> None:
        await delivery.on_event(event.id, event.org_id or "", event.type, event_data(event), event.time)

    return {"*": fan_out}
