"""The shape of a stored document, as every repository reads and writes it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

Doc = dict[str, Any]
"""A MongoDB document (or query, or update) as pymongo takes and returns it."""

SCALARS = (str, int, float, bool)


def by_index(flt: Doc) -> Doc:
    """``flt`` with each plain equality on a scalar field (``{"org_id": "o1"}``) written ``{"$eq": "o1"}``,
    inside ``$and`` / ``$or`` / ``$nor`` lists too. Shape in, same shape out; nothing is changed in place.

    On MongoDB the two forms are one predicate, so production loses nothing. On nx-27017 (the MongoDB-wire
    server of tests, ``make run`` and the benchmarks; ``docs/architecture.md``) a plain equality becomes
    ``json_extract(f) = v OR EXISTS (json_each(f) ...)`` (MongoDB's match of an array element), and that ``OR``
    keeps SQLite from using any index on ``f``: the query reads the whole collection. Measured there with 50k
    documents: a ``find_one`` on an indexed pair 7.0 → 2.2 ms, a sorted range claim (``find_one_and_update``)
    73 → 2.6 ms (issue 15). ``$eq`` is translated without the array arm, so the declared index serves it.

    Use it only for fields that never hold arrays: on nx-27017 ``$eq`` does not match an array's elements.
    ``_id`` (a column of its own there), ``None`` (null tests keep their form), operator documents, lists and
    other values are left as they are.
    """
    out: Doc = {}
    for key, value in flt.items():
        if key in ("$and", "$or", "$nor") and isinstance(value, list):
            out[key] = [by_index(part) if isinstance(part, dict) else part for part in value]
        elif isinstance(value, SCALARS) and not key.startswith("$") and key != "_id":
            out[key] = {"$eq": value}
        else:
            out[key] = value
    return out


async def count(collection: AsyncCollection[Doc], flt: Doc) -> int:
    """How many documents of ``collection`` match ``flt``, with the ``count`` command (one round trip).

    Exact with a filter on MongoDB (a replica set counts through the filter's index; only a sharded cluster's
    orphans could make it drift), and not for use inside a transaction. Not ``count_documents``: pymongo sends
    it as an ``aggregate`` with ``$group``, which nx-27017 evaluates by reading the whole collection into
    Python whatever the filter — 3.6 s with 50k documents for a count whose filter matched one (issue 15),
    where ``count`` with an index-served filter (see :func:`by_index`) takes 2 ms.
    """
    reply = await collection.database.command({"count": collection.name, "query": flt})
    return int(reply["n"])
