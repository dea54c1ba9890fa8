"""Events in: starting the runs an event triggers, and keeping the events runs may wait for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .constants import MAX_RECEIVED_PER_RUN, REPORT_REPLIES, RUN_CAUSED_OUTCOMES, RUN_COMMANDS, SERVICE_NAME
from .expressions import ExpressionError, evaluate, truthy
from .language import Definition
from .ports import Effects
from .repository import Repository, Run
from .runs import cancel_run
from .starting import Versions, start_triggered

log = logging.getLogger(__name__)


class ListeningLookup:
    """The runs of an organisation listening for events, looked up once for every event of that organisation
    handled at the same time (the consumer handles up to ``QUEUE_CONCURRENCY`` at once): the first handler
    opens a batch, lets the others join it for one turn of the event loop, closes it and reads the runs once
    for all of them. Every event's look starts after the event arrived, so a run that started before an
    event arrived is always seen by it."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._open: dict[str, asyncio.Future[list[tuple[Run, list[str]]]]] = {}

    async def runs(self, org_id: str, type_: str) -> list[Run]:
        """The unfinished runs of ``org_id`` listening for ``type_``."""
        batch = self._open.get(org_id)
        if batch is None:
            batch = asyncio.get_running_loop().create_future()
            self._open[org_id] = batch
            try:
                await asyncio.sleep(0)  # the events handled alongside this one join the batch
            finally:
                del self._open[org_id]  # closed: a later event opens its own look
            try:
                batch.set_result(await self.repo.all_listening_runs(org_id))
            except Exception as exc:
                batch.set_exception(exc)
                batch.exception()  # retrieved: the handlers that joined get it too, none is left unseen
                raise
            except BaseException:
                batch.cancel()
                raise
        found = await asyncio.shield(batch)
        return [run for run, listens in found if type_ in listens]


def caused_by_a_run(event: dict[str, Any]) -> bool:
    """Whether ``event`` answers an effect of a workflow run, so that starting runs from it could loop (a
    definition triggered by ``notification.delivered`` with a ``notify`` step, or by ``report.completed``
    with a ``report`` step, would otherwise start itself for ever): a report's answer to a
    ``report.requested`` command (``data.request_id`` set: only commands carry one, ``POST /reports`` does
    not), or the outcome of a delivery a ``notification.requested`` command asked for
    (``data.cause_event_type``). Such events still reach the runs waiting for them."""
    data = event.get("data")
    if not isinstance(data, dict):
        return False
    type_ = event.get("type", "")
    if type_ in REPORT_REPLIES:
        return bool(data.get("request_id"))
    if type_ in RUN_CAUSED_OUTCOMES:
        return data.get("cause_event_type") in RUN_COMMANDS
    return False


class Triggers:
    """Reacts to every event of the platform's streams (the consumer group ``workflow``)."""

    def __init__(self, repo: Repository, effects: Effects, on_start: Callable[[], None] | None = None) -> None:
        self.repo = repo
        self.effects = effects
        self.on_start = on_start
        """Called after runs were started or woken (the scheduler of this process looks at once)."""
        self.versions = Versions(repo)
        self.listening = ListeningLookup(repo)

    async def _definition(self, run: Run) -> Definition | None:
        return await self.versions.get(run.org_id, run.definition_id, run.version)

    async def _cancels(self, run: Run, defn: Definition, event: dict[str, Any]) -> bool:
        for cancel in defn.cancel_on:
            if cancel.event_type != event["type"]:
                continue
            try:
                if cancel.match is None or truthy(evaluate(cancel.match, {"event": event, "trigger": run.trigger})):
                    return True
            except ExpressionError as exc:
                log.warning("cancel_on match failed", extra={"run": run.id, "error": str(exc)})
        return False

    async def on_event(self, event: dict[str, Any]) -> list[Run]:
        """Handle one event (``{id, type, source, time, org_id, subject, data}``): cancel the unfinished runs
        of its organisation whose ``cancel_on`` it matches, keep it for the others whose waits listen for its
        type (and wake those waiting), keep a report service's answer for the ``report`` step that asked
        (``data.request_id``), then start a run
        of every enabled definition it triggers whose filter holds. Idempotent: the same event again keeps
        nothing twice and starts no second run (unique ``trigger_key``). Events of this service's own stream,
        and the answers other services give to a run's effects (:func:`caused_by_a_run`), trigger nothing (a
        workflow cannot start itself in a loop) but can be waited for. Returns the runs started."""
        org_id = event.get("org_id")
        if not org_id:
            return []
        type_ = event["type"]
        if type_ in REPORT_REPLIES:
            request_id = (event.get("data") or {}).get("request_id")
            woken = isinstance(request_id, str) and request_id and await self.repo.keep_reply(org_id, request_id, event)
            if woken and self.on_start is not None:
                self.on_start()
        listening = await self.listening.runs(org_id, type_)
        for held in listening:
            defn = await self._definition(held)
            if defn is not None and await self._cancels(held, defn, event):
                await cancel_run(self.repo, self.effects, held, f"cancelled by {type_} {event['id']}")
                continue
            await self.repo.keep_received(held.id, org_id, event, MAX_RECEIVED_PER_RUN)
        if listening and await self.repo.wake_waiting(org_id, type_) and self.on_start is not None:
            self.on_start()
        if event.get("source") == SERVICE_NAME or caused_by_a_run(event):
            return []
        started = await start_triggered(self.repo, event, self.versions)
        if started and self.on_start is not None:
            self.on_start()
        return started
