"""Intake wakes the poller only when it stored messages its lanes did not take: messages claimed at insert
and submitted need no poll (a poll after every event was a claim query per event, per worker)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from novapulse_webhook.dispatcher import Job
from novapulse_webhook.intake import Intake
from novapulse_webhook.repository import Write

NOW = datetime(2026, 11, 30, tzinfo=UTC)
EVENT = "user.password_changed"  # a public catalogue type


class Endpoints:
    def __init__(self, count: int) -> None:
        self.docs = [{"_id": f"ep{i}", "org_id": "o1", "enabled": True, "event_types": []} for i in range(count)]

    async def org_endpoints(self, org_id: str) -> list[dict[str, Any]]:
        return self.docs


class Writer:
    closed = False

    def __init__(self) -> None:
        self.writes: list[Write] = []

    def put(self, write: Write) -> asyncio.Future[bool]:
        self.writes.append(write)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(True)
        return fut


class Dispatcher:
    def has_room(self, endpoint_id: str) -> bool:
        return True


class Recorder:
    def __init__(self) -> None:
        self.released: list[str] = []

    def release(self, message_id: str, claim: str) -> None:
        self.released.append(message_id)


async def _run(lanes_take: int) -> tuple[int, list[Job], Recorder]:
    woken: list[int] = []
    taken: list[Job] = []

    def submit(job: Job, endpoint: Any) -> bool:
        if len(taken) < lanes_take:
            taken.append(job)
            return True
        return False

    recorder = Recorder()
    intake = Intake(
        cast(Any, None),
        cast(Any, Writer()),
        cast(Any, Endpoints(3)),
        cast(Any, Dispatcher()),
        cast(Any, recorder),
        timedelta(seconds=10),
        submit,
        lambda: woken.append(1),
    )
    assert await intake.on_event("e1", "o1", EVENT, {"user_id": "u"}, NOW) == 3
    return len(woken), taken, recorder


async def test_no_poll_when_every_message_went_to_its_lane() -> None:
    woken, taken, recorder = await _run(lanes_take=3)
    assert woken == 0
    assert len(taken) == 3
    assert recorder.released == []


async def test_the_poller_is_woken_for_messages_a_full_lane_gave_back() -> None:
    woken, taken, recorder = await _run(lanes_take=2)
    assert woken == 1
    assert len(taken) == 2
    assert len(recorder.released) == 1
