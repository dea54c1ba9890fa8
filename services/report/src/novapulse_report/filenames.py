"""Names of a report's files in the :class:`~novapulse_report.ports.FileStore`."""

from __future__ import annotations

from .report_types import FORMATS
from .repository import Report


def part_name(report_id: str, index: int) -> str:
    """Part ``index`` (0-based) of a running report: ``CHUNK_ROWS`` rows, already encoded."""
    return f"{report_id}/part-{index:06d}"


def file_name(report: Report) -> str:
    """The finished file."""
    return f"{report.id}/report.{FORMATS[report.format][1]}"


def manifest_name(report: Report) -> str:
    """The manifest stored with the file (row count, checksum, size, parameters; JSON)."""
    return f"{report.id}/manifest.json"


def metadata(report_id: str, kind: str) -> dict[str, str]:
    """What every file of a report carries: its report and kind (``part``, ``file``, ``manifest``)."""
    return {"report_id": report_id, "kind": kind}
