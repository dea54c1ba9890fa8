"""The index audit: is every query the services sent served by an index they declared?

Reads the JSON lines :mod:`novapulse_runtime.querylog` wrote (one file per process of a test run or a
``make run``) and checks each query shape against the index keys created for the same collection (in the same
database; indexes created under another database of the same service count too, since test runs give each
test its own database), plus ``_id``'s index, which every collection has.

A query counts as served when, for each ``$or`` alternative, some index's first key is a field the filter
constrains — MongoDB can then bound an index scan (the planner's rule for index eligibility); or, for a
query with no filter, when an index's key starts with the sort. A query that constrains nothing and sorts on
nothing reads the whole collection: it is reported too. A deliberate scan is waived in :data:`WAIVERS`, with
its reason.

This is the static half of the check issue 16 asks for; ``explain`` on a real MongoDB is the other half
(``docs/operations.md``, "MongoDB at scale").

``python -m novapulse_devkit.indexaudit <dir>`` prints the report and exits 1 when a query is not served.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_DB = re.compile(r"novapulse_([a-z]+)$")
WAIVERS: dict[tuple[str, str], str] = {
    ("signing_keys", "*"): "auth's token signing keys: a handful of documents (current, next, retired)",
    ("users", "enc_key_id"): "re-encryption after a key rotation reads every user whose secret is under an old key",
}
"""``(collection, field)`` → why a query constraining that field need not be served by an index; field ``*``
waives every query of the collection (small, bounded collections)."""


@dataclass(frozen=True)
class Unserved:
    db: str
    coll: str
    op: str
    fields: tuple[str, ...]
    sort: tuple[str, ...]
    where: str

    def describe(self) -> str:
        flt = ", ".join(self.fields) or "(no filter)"
        sort = f" sort {', '.join(self.sort)}" if self.sort else ""
        return f"{self.where}: {self.op} {self.coll} by {flt}{sort}"


def _service(db: str) -> str:
    found = SERVICE_DB.search(db)
    return found.group(1) if found else db


def load(paths: Iterable[Path]) -> list[dict[str, Any]]:
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    records.append(json.loads(line))
    return records


def audit(records: list[dict[str, Any]]) -> list[Unserved]:
    """The query shapes of ``records`` no declared index serves (deduplicated by code location and shape)."""
    by_db: dict[tuple[str, str], set[tuple[str, ...]]] = defaultdict(set)
    by_service: dict[tuple[str, str], set[tuple[str, ...]]] = defaultdict(set)
    for r in records:
        if r["kind"] == "index":
            key = tuple(r["key"])
            by_db[(r["db"], r["coll"])].add(key)
            by_service[(_service(r["db"]), r["coll"])].add(key)
    found: dict[tuple[Any, ...], Unserved] = {}
    for r in records:
        if r["kind"] != "query":
            continue
        keys = {("_id",)} | by_db[(r["db"], r["coll"])] | by_service[(_service(r["db"]), r["coll"])]
        if _waived(r["coll"], r["fields"]):
            continue
        for branch in _unserved(r["fields"], r["sort"], keys):
            item = Unserved(r["db"], r["coll"], r["op"], tuple(branch), tuple(r["sort"]), r["where"])
            found.setdefault((item.where, item.coll, item.fields, item.sort), item)
    return sorted(found.values(), key=lambda u: (u.where, u.coll, u.fields))


def _unserved(branches: list[list[str]], sort: list[str], keys: set[tuple[str, ...]]) -> list[list[str]]:
    """The ``$or`` alternatives of a query no index in ``keys`` serves."""
    out = []
    for fields in branches:
        if fields:
            if not any(k and k[0] in fields for k in keys):
                out.append(fields)
        elif not sort or not any(k[: len(sort)] == tuple(sort) for k in keys):
            out.append(fields)
    return out


def _waived(coll: str, branches: list[list[str]]) -> bool:
    if (coll, "*") in WAIVERS:
        return True
    return all(any((coll, f) in WAIVERS for f in fields) for fields in branches)


def report(directory: Path) -> list[Unserved]:
    return audit(load(sorted(directory.glob("*.jsonl"))))


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m novapulse_devkit.indexaudit <query-log directory>", file=sys.stderr)
        return 2
    problems = report(Path(args[0]))
    for item in problems:
        print(f"not served by an index: {item.describe()}")
    print(f"index audit: {len(problems)} unserved query shape(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
