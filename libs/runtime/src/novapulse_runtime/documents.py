"""The shape of a stored document, as every repository reads and writes it."""

from __future__ import annotations

from typing import Any

Doc = dict[str, Any]
"""A MongoDB document (or query, or update) as pymongo takes and returns it."""
