"""Encoding rows into report files: pure functions over rows, no I/O but the local files the XLSX and PDF
renderers write. Every function keeps memory bounded by its chunk of rows (or, for the PDF, by
``PDF_TABLE_ROWS`` rows and one count per group).

Times are written in the report's IANA time zone as RFC 3339 with their offset
(``2026-03-29T03:30:00.000+02:00``), never as bare local times.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .constants import PDF_CHART_GROUPS, PDF_TABLE_ROWS, XLSX_MAX_ROWS_PER_SHEET
from .report_types import ReportType

Cell = str | int | None
Row = list[Cell]

BOM = "\ufeff".encode()
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""Leading characters a spreadsheet may read as a formula (OWASP "CSV Injection")."""
_TRIGGER_SET = frozenset(FORMULA_TRIGGERS)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_time(ms: int, zone: ZoneInfo) -> str:
    """Epoch milliseconds as RFC 3339 in ``zone``, with milliseconds and the zone's offset at that instant
    (integer arithmetic: no float rounding of the milliseconds)."""
    return (EPOCH + timedelta(milliseconds=ms)).astimezone(zone).isoformat(timespec="milliseconds")


class TimeFormatter:
    """:func:`format_time` for one zone, fast over rows in time order: the date, hour, minute and offset of a
    UTC minute are worked out once (the zone's offset at the minute's first and last second; a minute in
    which the offset changes, or an offset with seconds, falls back to :func:`format_time` row by row), and
    each row adds its seconds and milliseconds. Holds one minute, whatever the report's length."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._minute: int | None = None
        self._prefix: str | None = None
        self._suffix = ""

    def __call__(self, ms: int) -> str:
        minute = ms // 60_000
        if minute != self._minute:
            self._enter(minute)
        if self._prefix is None:
            return format_time(ms, self.zone)
        return f"{self._prefix}{ms // 1000 % 60:02d}.{ms % 1000:03d}{self._suffix}"

    def _enter(self, minute: int) -> None:
        self._minute = minute
        first = (EPOCH + timedelta(minutes=minute)).astimezone(self.zone)
        last = (EPOCH + timedelta(minutes=minute, seconds=59, milliseconds=999)).astimezone(self.zone)
        offset = first.utcoffset()
        if offset is None or offset != last.utcoffset() or offset.total_seconds() % 60:
            self._prefix = None
            return
        text = first.isoformat(timespec="milliseconds")  # 2026-03-29T03:30:00.000+02:00
        self._prefix, self._suffix = text[:17], text[23:]


def row_values(rtype: ReportType, row: dict[str, Any], zone: ZoneInfo) -> Row:
    """The cells of one data-set row in ``rtype``'s column order: datetimes (epoch ms) formatted in
    ``zone``, integers as ``int``, strings as ``str``; a missing value is ``None``."""
    return row_builder(rtype, zone, rtype.column_names)(row)


def row_builder(rtype: ReportType, zone: ZoneInfo, fields: Sequence[str]) -> Callable[[Mapping[str, Any]], Row]:
    """A function from one stored row (a mapping holding column ``i``'s value under ``fields[i]``) to its
    cells, as :func:`row_values` gives them. Built once per report: the conversions are chosen per column
    up front and the time zone's offsets are cached (:class:`TimeFormatter`), so a row costs one lookup and
    one conversion per cell."""
    time_of = TimeFormatter(zone)
    convert: dict[str, Callable[[Any], Cell]] = {"datetime": lambda v: time_of(int(v)), "integer": int, "string": str}
    spec = [(field, convert[col.kind]) for field, col in zip(fields, rtype.columns, strict=True)]

    def build(row: Mapping[str, Any]) -> Row:
        get = row.get
        return [None if (v := get(field)) is None else conv(v) for field, conv in spec]

    return build


def neutralize(value: str) -> str:
    """``value`` made inert for spreadsheets: a leading ``= + - @``, tab or carriage return gets a ``'``
    prefix (OWASP CSV-injection advice), so ``=HYPERLINK(...)`` is shown as text, never evaluated."""
    return "'" + value if value[:1] in _TRIGGER_SET else value


def csv_chunk(
    rows: Iterable[Row], columns: Sequence[str], *, header: bool, bom: bool, neutralize_formulas: bool
) -> bytes:
    """Rows as RFC 4180 CSV (CRLF line ends, fields quoted when they hold ``,`` ``"`` CR or LF), UTF-8.
    ``header``: start with the column names (and the UTF-8 BOM when ``bom``, for Excel)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    if header:
        writer.writerow(columns)
    if neutralize_formulas:  # None is written as an empty field by the csv module itself
        triggers = _TRIGGER_SET
        writer.writerows([("'" + v if isinstance(v, str) and v[:1] in triggers else v) for v in row] for row in rows)
    else:
        writer.writerows(rows)
    data = buf.getvalue().encode()
    return BOM + data if header and bom else data


def ndjson_chunk(rows: Iterable[Row], columns: Sequence[str]) -> bytes:
    """Rows as NDJSON: one JSON object per line (keys in column order), UTF-8, ``\\n`` after each."""
    return b"".join(
        json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        for row in rows
    )


def staged_chunk(rows: Sequence[Row]) -> bytes:
    """Rows staged for a renderer that needs the whole report (XLSX, PDF): one JSON array of rows per line
    (one line per call, nothing for no rows), so staged chunks concatenate."""
    if not rows:
        return b""
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def read_staged(lines: Iterable[bytes]) -> Iterator[list[Row]]:
    """The rows of staged lines (:func:`staged_chunk`), one list per line; a line holding a single row (the
    staging of earlier versions, which a resumed report may still have) gives a list of one."""
    for line in lines:
        if line.strip():
            value = json.loads(line)
            yield value if value and isinstance(value[0], list) else [value]


class XlsxSink:
    """An XLSX file at ``out`` written with XlsxWriter in constant-memory mode, rows added as they come
    (each row is flushed as it is written: memory is XlsxWriter's constant state). A sheet holds
    ``sheet_rows`` rows including its header; the next row starts a new sheet (``data``, ``data 2``…).
    Strings are written as strings, never as formulas, URLs or numbers, so a cell ``=HYPERLINK(...)`` is
    inert. Times stay RFC 3339 strings with their offset (an Excel date has no zone). The file is
    byte-for-byte reproducible: fixed document times (``created``) and zip entry times."""

    def __init__(
        self, rtype: ReportType, out: Path, created: datetime, *, sheet_rows: int = XLSX_MAX_ROWS_PER_SHEET
    ) -> None:
        import xlsxwriter  # imported here: only the worker renders

        self.rtype = rtype
        self.sheet_rows = sheet_rows
        self.workbook = xlsxwriter.Workbook(
            str(out),
            {
                "constant_memory": True,
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "strings_to_numbers": False,
                "tmpdir": str(out.parent),
            },
        )
        self.workbook.set_properties({"title": rtype.title, "created": created.replace(tzinfo=None)})
        self.sheets = 0
        self._sheet: Any = None
        self._line = sheet_rows

    def _next_sheet(self) -> None:
        self.sheets += 1
        self._sheet = self.workbook.add_worksheet("data" if self.sheets == 1 else f"data {self.sheets}")
        for c, name in enumerate(self.rtype.column_names):
            self._sheet.write_string(0, c, name)
        self._line = 1

    def add(self, rows: Iterable[Row]) -> None:
        """Write ``rows`` after those already written."""
        line, limit = self._line, self.sheet_rows
        write_string: Any = None
        write_number: Any = None
        if self._sheet is not None:
            write_string, write_number = self._sheet.write_string, self._sheet.write_number
        for row in rows:
            if line >= limit:
                self._next_sheet()
                line = self._line
                write_string, write_number = self._sheet.write_string, self._sheet.write_number
            for c, value in enumerate(row):
                if isinstance(value, int):
                    write_number(line, c, value)
                elif value is not None:
                    write_string(line, c, value)
            line += 1
        self._line = line

    def close(self) -> int:
        """Finish the file (an empty report gets one sheet with its header). Returns the number of sheets."""
        if self.sheets == 0:
            self._next_sheet()
        self.workbook.close()
        return self.sheets


def render_xlsx(
    rows: Iterable[Row],
    rtype: ReportType,
    out: Path,
    created: datetime,
    *,
    sheet_rows: int = XLSX_MAX_ROWS_PER_SHEET,
) -> int:
    """Write ``rows`` to an XLSX file at ``out`` (:class:`XlsxSink`). Returns the number of sheets."""
    sink = XlsxSink(rtype, out, created, sheet_rows=sheet_rows)
    sink.add(rows)
    return sink.close()


def _latin1(text: str) -> str:
    """The PDF's core fonts are Latin-1: other characters are shown as ``?``."""
    return text.encode("latin-1", "replace").decode("latin-1")


class PdfSummary:
    """What the PDF shows, gathered as rows come: one count per ``rtype.group_by`` value and the first
    ``PDF_TABLE_ROWS`` rows (memory: those rows and one counter per distinct group value)."""

    def __init__(self, rtype: ReportType) -> None:
        self.rtype = rtype
        self.group_index = rtype.column_names.index(rtype.group_by)
        self.counts: Counter[str] = Counter()
        self.shown: list[Row] = []

    def add(self, rows: Iterable[Row]) -> None:
        """Count ``rows`` (and keep them while fewer than ``PDF_TABLE_ROWS`` are kept)."""
        index, counts, shown = self.group_index, self.counts, self.shown
        for row in rows:
            counts[str(row[index] or "")] += 1
            if len(shown) < PDF_TABLE_ROWS:
                shown.append(row)

    def render(self, out: Path, created: datetime, *, parameters: Sequence[tuple[str, str]], total_rows: int) -> None:
        """Write the PDF at ``out`` (see :func:`render_pdf`)."""
        _write_pdf(self, out, created, parameters=parameters, total_rows=total_rows)


def render_pdf(
    rows: Iterable[Row],
    rtype: ReportType,
    out: Path,
    created: datetime,
    *,
    parameters: Sequence[tuple[str, str]],
    total_rows: int,
) -> None:
    """Write a PDF summary of ``rows`` at ``out`` with fpdf2: the parameters, the row count, a bar chart
    of rows per ``rtype.group_by`` value (the ``PDF_CHART_GROUPS`` largest, the rest as ``other``) and a
    table of the first ``PDF_TABLE_ROWS`` rows (the full data is in the CSV, NDJSON or XLSX formats).
    Memory: the shown rows and one counter per distinct group value (:class:`PdfSummary`). Reproducible:
    the document's creation time is ``created``.
    """
    summary = PdfSummary(rtype)
    summary.add(rows)
    summary.render(out, created, parameters=parameters, total_rows=total_rows)


def _write_pdf(
    summary: PdfSummary,
    out: Path,
    created: datetime,
    *,
    parameters: Sequence[tuple[str, str]],
    total_rows: int,
) -> None:
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    rtype, counts, shown = summary.rtype, summary.counts, summary.shown
    pdf = FPDF(orientation="L", format="A4")
    pdf.set_creation_date(created)
    pdf.set_title(_latin1(rtype.title))
    pdf.set_auto_page_break(True, margin=12)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _latin1(rtype.title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=10)
    for name, value in (*parameters, ("rows", str(total_rows))):
        pdf.cell(0, 6, _latin1(f"{name}: {value}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 8, _latin1(f"Rows by {rtype.group_by}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=9)
    groups = counts.most_common(PDF_CHART_GROUPS)
    rest = sum(counts.values()) - sum(n for _, n in groups)
    if rest:
        groups.append(("other", rest))
    biggest = max((n for _, n in groups), default=1)
    for label, n in groups:
        y = pdf.get_y()
        pdf.set_xy(pdf.l_margin, y)
        pdf.cell(60, 6, _latin1(label or "(empty)"))
        pdf.set_fill_color(66, 110, 200)
        pdf.rect(pdf.l_margin + 62, y + 1, max(0.5, 150 * n / biggest), 4, style="F")
        pdf.set_xy(pdf.l_margin + 216, y)
        pdf.cell(40, 6, str(n), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 12)
    note = f"First {len(shown)} of {total_rows} rows" if total_rows > len(shown) else f"All {total_rows} rows"
    pdf.cell(0, 8, note, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=7)
    with pdf.table(text_align="LEFT", first_row_as_headings=True) as table:
        header = table.row()
        for name in rtype.column_names:
            header.cell(name)
        for row in shown:
            cells = table.row()
            for cell in row:
                cells.cell(_latin1("" if cell is None else str(cell)))
    pdf.output(str(out))
