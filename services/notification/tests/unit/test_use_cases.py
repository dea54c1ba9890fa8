"""The API's use cases over an in-memory repository: inbox paging (one rule, opaque cursors), reading,
preferences with critical categories, and the problems their domain errors become."""

from __future__ import annotations

from typing import Any, cast

import pytest
from pydantic import ValidationError

from novapulse_notification.api import PROBLEMS
from novapulse_notification.errors import CriticalNotSwitchable, NotificationNotFound
from novapulse_notification.inbox import Inbox
from novapulse_notification.models import NotificationQuery
from novapulse_notification.preferences import Preferences
from novapulse_notification.repository import Repository
from novapulse_runtime.errors import to_problem
from novapulse_runtime.paging import encode_cursor

ORG, USER = "org-1", "u1"


class MemoryRepository:
    """The few repository reads and writes the use cases call, over lists and dicts."""

    def __init__(self, notices: int = 0) -> None:
        self.notices: list[dict[str, Any]] = [
            {"_id": f"{n:032x}", "org_id": ORG, "user_id": USER, "read": False, "sort_key": f"{n:014d}-{n:032x}"}
            for n in range(notices)
        ]
        self.preferences: dict[str, Any] = {}

    async def list_notices(
        self, org_id: str, user_id: str, after: str | None, limit: int, unread_only: bool
    ) -> list[dict[str, Any]]:
        mine = [n for n in self.notices if (n["org_id"], n["user_id"]) == (org_id, user_id)]
        mine = [n for n in mine if (after is None or n["sort_key"] < after) and not (unread_only and n["read"])]
        return sorted(mine, key=lambda n: n["sort_key"], reverse=True)[:limit]

    async def unread_count(self, org_id: str, user_id: str) -> int:
        return sum(1 for n in self.notices if n["user_id"] == user_id and not n["read"])

    async def mark_read(self, org_id: str, user_id: str, notice_id: str) -> dict[str, Any] | None:
        for n in self.notices:
            if (n["_id"], n["org_id"], n["user_id"]) == (notice_id, org_id, user_id):
                n["read"] = True
                return n
        return None

    async def get_preferences(self, org_id: str, user_id: str) -> dict[str, Any] | None:
        return self.preferences.get(user_id)

    async def put_preferences(self, org_id: str, user_id: str, channels: dict[str, Any]) -> None:
        self.preferences[user_id] = {"channels": channels}


def repository(notices: int = 0) -> Repository:
    return cast(Repository, MemoryRepository(notices))


async def test_pages_follow_the_cursor_and_an_exactly_full_last_page_has_no_next_cursor():
    inbox = Inbox(repository(4))
    first = await inbox.page(ORG, USER, NotificationQuery(limit=2))
    assert [d["_id"] for d in first.items] == [f"{3:032x}", f"{2:032x}"]
    assert first.unread_count == 4
    assert first.next_cursor == encode_cursor(first.items[-1]["sort_key"])  # opaque: base64url of the key
    last = await inbox.page(ORG, USER, NotificationQuery(limit=2, cursor=first.next_cursor))
    assert [d["_id"] for d in last.items] == [f"{1:032x}", f"{0:032x}"]
    assert last.next_cursor is None
    assert (await inbox.page(ORG, USER, NotificationQuery(limit=4))).next_cursor is None


@pytest.mark.parametrize("cursor", ["A", "not*base64", "000000000000-" + "f" * 32, "x" * 300])
def test_a_cursor_that_cannot_decode_is_invalid(cursor: str):
    with pytest.raises(ValidationError):
        NotificationQuery(cursor=cursor)


def test_page_sizes_stay_the_service_s():
    assert NotificationQuery().limit == 20
    assert NotificationQuery(limit=100).limit == 100
    with pytest.raises(ValidationError):
        NotificationQuery(limit=101)


async def test_reading_someone_else_s_notice_is_not_found_with_the_same_problem():
    inbox = Inbox(repository(1))
    with pytest.raises(NotificationNotFound) as caught:
        await inbox.read(ORG, "u2", f"{0:032x}")
    problem = to_problem(caught.value, PROBLEMS)
    assert (problem.status, problem.title, problem.detail) == (404, "Not Found", "No such notification")
    assert (await inbox.read(ORG, USER, f"{0:032x}"))["read"] is True


async def test_critical_categories_cannot_be_switched_off_and_nothing_changes():
    prefs = Preferences(repository())
    with pytest.raises(CriticalNotSwitchable) as caught:
        await prefs.update(ORG, USER, {"security": {"email": False}, "reports": {"email": False}})
    problem = to_problem(caught.value, PROBLEMS)
    assert (problem.status, problem.detail) == (422, "Critical notifications cannot be turned off: security.email")
    assert (await prefs.get(ORG, USER))["reports"]["email"] is True


async def test_preferences_keep_what_a_request_leaves_out():
    prefs = Preferences(repository())
    await prefs.update(ORG, USER, {"reports": {"email": False}})
    after = await prefs.update(ORG, USER, {"reports": {"in_app": False}, "webhooks": {}})
    assert after["reports"] == {"email": False, "in_app": False}
    assert after["security"] == {"email": True, "in_app": True}
