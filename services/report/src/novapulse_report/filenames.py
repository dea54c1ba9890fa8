"""Names of a report's files in the :class:`~novapulse_report.ports.FileStore`."""

from __future__ import annotations

from .report_types import FORMATS
from .repository import Report


def parts_prefix(report_id: str) -> str:
    return f"{report_id}/part-"


def part_name(report_id: str, index: int) -> str:
    """Part ``index`` (0-based) of a running report: ``CHUNK_ROWS`` rows, already encoded."""
    return f"{parts_prefix(report_id)}{index:06d}"


def file_name(report: Report) -> str:
    """The finished file."""
    return f"{report.id}/report.{FORMATS[report.format][1]}"


def manifest_name(report: Report) -> str:
    """The manifest stored with the file (row count, checksum, size, parameters; JSON)."""
    return f"{report.id}/manifest.json"
