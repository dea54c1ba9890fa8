"""The pieces of the runtime every service shares (issue 9): cursor paging with one rule, domain errors
answered by a service's table, path ids, the clock, and the per-process ``shared``/``open`` wiring."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest

from novapulse_devkit.testing import ServiceProcess, wait_until
from novapulse_runtime import clock
from novapulse_runtime.errors import Conflict, ErrorTable, LimitReached, NotFound, Problem, Unauthenticated, to_problem
from novapulse_runtime.paging import PageQuery, decode_cursor, encode_cursor, page
from novapulse_runtime.process import periodic
from novapulse_runtime.runtime import Runtime
from novapulse_runtime.settings import ServiceSettings

# --- paging -------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_an_exactly_full_last_page_has_no_next_cursor() -> None:
    rows = ["a", "b", "c", "d"]
    items, cursor = page(rows[:3], 3, key=str)  # the repository read limit + 1 = 4 and found 3
    assert (items, cursor) == (["a", "b", "c"], None)
    items, cursor = page(rows, 3, key=str)  # found 4: a next page exists
    assert items == ["a", "b", "c"]
    assert cursor is not None
    assert decode_cursor(cursor) == "c"
    assert page([], 3, key=str) == ([], None)


@pytest.mark.unit
@pytest.mark.parametrize("key", ["ep_01a22b97a7d9b30b3e2f99cebafc", "2026-11-30T00:00:00Z|abc", "é✓"])
def test_cursors_are_opaque_and_round_trip(key: str) -> None:
    cursor = encode_cursor(key)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(cursor) == key
    assert PageQuery(cursor=cursor).after == key


@pytest.mark.unit
@pytest.mark.parametrize("cursor", ["!!", "a", "abcde", "////", "a=", "x" * 300])
def test_a_cursor_that_cannot_decode_is_refused(cursor: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's ValidationError is a ValueError
        PageQuery(cursor=cursor)


@pytest.mark.unit
@pytest.mark.parametrize("cursor", ["AA", "_w", "____", "AAAAAA_", "gICA"])
def test_every_cursor_the_schema_admits_decodes(cursor: str) -> None:
    """What the OpenAPI pattern calls valid is accepted (a fuzzer's valid cursor is not a 422): a made-up
    cursor is only a bound inside the caller's organisation."""
    assert isinstance(PageQuery(cursor=cursor).after, str)


@pytest.mark.unit
def test_page_query_reads_one_more_than_it_shows() -> None:
    assert PageQuery(limit=10).fetch == 11
    assert PageQuery().after is None


# --- domain errors ------------------------------------------------------------------------------------------


class EmailTaken(Conflict):
    pass


class Slow(LimitReached):
    pass


@pytest.mark.unit
def test_domain_errors_map_by_the_most_specific_class() -> None:
    table: ErrorTable = {EmailTaken: Problem(409, title="Email taken", type="https://e/x")}
    err = to_problem(EmailTaken("That address is registered", field="email"), table)
    assert (err.status, err.title, err.type, err.detail, err.extra) == (
        409,
        "Email taken",
        "https://e/x",
        "That address is registered",
        {"field": "email"},
    )
    assert to_problem(NotFound("No such user")).status == 404
    limited = to_problem(Slow("wait", retry_after=12))
    assert (limited.status, limited.headers) == (429, {"Retry-After": "12"})
    assert to_problem(Unauthenticated("no")).headers["WWW-Authenticate"] == "Bearer"


# --- clock --------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_clock_reads_every_stored_form() -> None:
    moment = datetime(2026, 11, 30, 12, 0, 0, 123000, tzinfo=UTC)
    ms = clock.to_ms(moment)
    assert clock.from_ms(ms) == moment
    assert clock.as_datetime(ms) == moment
    assert clock.as_datetime("2026-11-30T12:00:00.123Z") == moment
    assert clock.as_datetime(moment.replace(tzinfo=None)) == moment
    assert clock.as_datetime(None) is None
    with pytest.raises(TypeError):
        clock.as_datetime(True)
    with pytest.raises(TypeError):
        clock.stamp(None)
    assert abs(clock.now_ms() - clock.to_ms(clock.utcnow())) < 1000


# --- wiring once, resources closed with the runtime ---------------------------------------------------------


async def test_shared_wiring_runs_once_and_resources_close_in_reverse_order(redis_url: str, mongo_url: str) -> None:
    settings = ServiceSettings(service_name="skeleton", redis_url=redis_url, mongo_url=mongo_url)
    rt = Runtime(settings, "all")
    calls: list[str] = []

    async def factory() -> str:
        calls.append("built")
        return "graph"

    @contextlib.asynccontextmanager
    async def resource(name: str) -> AsyncIterator[str]:
        calls.append(f"open {name}")
        yield name
        calls.append(f"close {name}")

    assert await rt.shared("graph", factory) == "graph"
    assert await rt.shared("graph", factory) == "graph"
    assert await rt.open(resource("a")) == "a"
    await rt.open(resource("b"))
    assert rt.bus is rt.bus
    await rt.close()
    assert calls == ["built", "open a", "open b", "close b", "close a"]


async def test_a_failed_factory_runs_again(redis_url: str, mongo_url: str) -> None:
    rt = Runtime(ServiceSettings(service_name="skeleton", redis_url=redis_url, mongo_url=mongo_url), "api")
    attempts = 0

    async def flaky() -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("first wiring fails")
        return attempts

    with pytest.raises(RuntimeError):
        await rt.shared("flaky", flaky)
    assert await rt.shared("flaky", flaky) == 2
    await rt.close()


# --- the same, through a real process ----------------------------------------------------------------------


async def _problem(r: aiohttp.ClientResponse, status: int) -> dict[str, object]:
    assert r.status == status
    assert r.content_type == "application/problem+json"
    body: dict[str, object] = await r.json()
    assert body["status"] == status
    return body


async def test_the_sample_service_pages_and_answers_domain_errors(
    sample: ServiceProcess, http: aiohttp.ClientSession
) -> None:
    base = sample.url + "/api/v1/sample"
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        async with http.get(base + "/gadgets", params={"limit": "1" if pages else "4", "cursor": cursor}) as r:
            assert r.status == 200
            body = await r.json()
        seen += body["items"]
        pages += 1
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]
    assert seen == [f"t{i:02d}" for i in range(5)]
    assert pages == 2  # 4 + an exactly full last page of 1: no cursor to an empty page
    async with http.get(base + "/gadgets", params={"cursor": "not a cursor!"}) as r:
        await _problem(r, 422)
    async with http.get(base + "/gadgets/x' or 1=1") as r:
        assert (await _problem(r, 404))["detail"] == "No such gadget"
    async with http.get(base + "/gadgets/t42") as r:
        assert (await _problem(r, 404))["detail"] == "No gadget t42"
    async with http.post(base + "/gadgets/t01/take") as r:
        body = await _problem(r, 409)
        assert (body["title"], body["type"], body["gadget"]) == (
            "Thing taken",
            "https://errors.example/thing-taken",
            "t01",
        )
        assert r.headers["X-Request-ID"]
    async with http.post(base + "/busy") as r:
        await _problem(r, 429)
        assert r.headers["Retry-After"] == "7"


# --- periodic workers ---------------------------------------------------------------------------------------


async def test_a_periodic_worker_repeats_survives_failures_and_stops_at_once(caplog: pytest.LogCaptureFixture) -> None:
    passes = 0
    stop = asyncio.Event()

    async def work() -> None:
        nonlocal passes
        passes += 1
        if passes == 2:
            raise RuntimeError("MongoDB went away")
        if passes == 4:
            stop.set()

    worker = periodic("sweep", 0.01, work)
    assert worker.__qualname__ == "sweep"
    with caplog.at_level(logging.WARNING, logger="novapulse.process"):
        await asyncio.wait_for(worker(stop), timeout=5)
    assert passes == 4  # the failed second pass did not end the loop
    [failed] = [r for r in caplog.records if r.getMessage() == "periodic task failed"]
    assert failed.task == "sweep"  # type: ignore[attr-defined]
    long = periodic("slow", 3600, work)
    stop2 = asyncio.Event()
    task = asyncio.create_task(long(stop2))
    await wait_until(lambda: passes == 5, timeout=5, message="first pass at once")
    stop2.set()
    await asyncio.wait_for(task, timeout=1)  # the hour-long wait ends on stop
