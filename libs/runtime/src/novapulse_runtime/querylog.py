"""Query shapes, for the index audit (development and tests only).

With ``NOVAPULSE_QUERY_LOG`` naming a directory, every process (and the test runner) registers
:class:`QueryRecorder` as a pymongo command listener: it keeps the *shape* of each query the code sends —
collection, command, the filter's field paths (values dropped), the sort — and the key of each index the code
creates, and writes them as JSON lines to ``<dir>/<pid>.jsonl`` when the process exits. The devkit's audit
(:mod:`novapulse_devkit.indexaudit`) reads them all and names every query no declared index serves.

Only commands sent from our own code (``novapulse_*`` packages outside ``tests``) are kept: a test reading a
collection to check a result is not a query the services run. Nothing here runs unless the variable is set.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from pymongo import monitoring

QUERY_LOG_ENV = "NOVAPULSE_QUERY_LOG"
QUERY_COMMANDS = {
    "find": ("filter", "sort"),
    "count": ("query", None),
    "distinct": ("query", None),
    "findAndModify": ("query", "sort"),
}
"""Commands whose filter sits at the top level: command name → (filter field, sort field)."""
LOGICAL = ("$and", "$or", "$nor")


def filter_shape(flt: Any) -> list[list[str]]:
    """The field paths a filter constrains, as one sorted list per alternative (``$or`` branches multiply
    out; ``$and`` merges; ``$nor`` and ``$expr`` constrain nothing an index can use). ``[[]]``: no
    constraint."""
    if not isinstance(flt, dict):
        return [[]]
    fields: set[str] = set()
    branches: list[list[str]] = [[]]
    for key, value in flt.items():
        if key == "$and" and isinstance(value, list):
            for part in value:
                branches = [sorted({*b, *p}) for b in branches for p in filter_shape(part)]
        elif key == "$or" and isinstance(value, list) and value:
            options = [shape for part in value for shape in filter_shape(part)]
            branches = [sorted({*b, *o}) for b in branches for o in options]
        elif not key.startswith("$"):
            fields.add(key)
    return [sorted({*b, *fields}) for b in branches]


def _caller(frame: FrameType | None) -> str | None:
    """``path:line`` of the innermost frame in our own code, or ``None`` when the command comes from a test."""
    while frame is not None:
        name = frame.f_code.co_filename
        if "/tests/" in name or "/bench/" in name or name.endswith("conftest.py"):
            return None
        if "novapulse_" in name and "/site-packages/pymongo" not in name and "querylog" not in name:
            return f"{name.split('/src/', 1)[-1]}:{frame.f_lineno}"
        frame = frame.f_back
    return None


class QueryRecorder(monitoring.CommandListener):
    """Keeps each distinct query shape and index key seen by this process (a set: memory stays small)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.seen: dict[str, dict[str, Any]] = {}

    def _keep(self, record: dict[str, Any]) -> None:
        key = json.dumps(record, sort_keys=True)
        self.seen.setdefault(key, record)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        cmd = event.command
        db = event.database_name
        if name == "createIndexes":
            for index in cmd.get("indexes", []):
                self._keep({"kind": "index", "db": db, "coll": cmd[name], "key": list(dict(index["key"]))})
            return
        if name not in QUERY_COMMANDS and name not in ("update", "delete", "aggregate"):
            return
        where = _caller(sys._getframe(1))
        if where is None:
            return
        coll = cmd.get(name)
        if not isinstance(coll, str):
            return
        shapes: list[tuple[Any, Any]] = []
        if name in QUERY_COMMANDS:
            flt_field, sort_field = QUERY_COMMANDS[name]
            sort = cmd.get(sort_field) if sort_field else None
            if name == "find" and cmd.get("limit") in (1, -1) and not cmd.get(flt_field) and not sort:
                return  # find_one({}): the first document in natural order, not a scan (GridFS's index check)
            shapes.append((cmd.get(flt_field), sort))
        elif name == "update":
            shapes += [(u.get("q"), None) for u in cmd.get("updates", [])]
        elif name == "delete":
            shapes += [(d.get("q"), None) for d in cmd.get("deletes", [])]
        else:  # aggregate: the leading $match (and a $sort right after it)
            stages = cmd.get("pipeline", [])
            match = stages[0].get("$match") if stages and isinstance(stages[0], dict) else None
            sort = stages[1].get("$sort") if len(stages) > 1 and isinstance(stages[1], dict) else None
            shapes.append((match, sort))
        for flt, sort in shapes:
            self._keep(
                {
                    "kind": "query",
                    "db": db,
                    "coll": coll,
                    "op": name,
                    "fields": filter_shape(flt),
                    "sort": list(dict(sort)) if isinstance(sort, dict) else [],
                    "where": where,
                }
            )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None

    def write(self) -> None:
        if not self.seen:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out, "a", encoding="utf-8") as fh:
            for record in self.seen.values():
                fh.write(json.dumps(record) + "\n")
        self.seen.clear()


_installed: QueryRecorder | None = None


def install_from_env() -> QueryRecorder | None:
    """Register the recorder once per process when ``NOVAPULSE_QUERY_LOG`` is set (before clients exist:
    pymongo attaches global listeners at client creation). Returns it, or ``None``."""
    global _installed
    directory = os.environ.get(QUERY_LOG_ENV, "")
    if not directory or _installed is not None:
        return _installed
    _installed = QueryRecorder(Path(directory) / f"{os.getpid()}.jsonl")
    monitoring.register(_installed)
    atexit.register(_installed.write)
    return _installed
