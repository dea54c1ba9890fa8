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
from collections.abc import Iterable, Sequence
from datetime import datetime
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


def format_time(ms: int, zone: ZoneInfo) -> str:
    """Epoch milliseconds as RFC 3339 in ``zone``, with milliseconds and the zone's offset at that instant."""
    return datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="milliseconds")


def row_values(rtype: ReportType, row: dict[str, Any], zone: ZoneInfo) -> Row:
    """The cells of one data-set row in ``rtype``'s column order: datetimes (epoch ms) formatted in
    ``zone``, integers as ``int``, strings as ``str``; a missing value is ``None``."""
    out: Row = []
    for col in rtype.columns:
        value = row.get(col.name)
        if value is None:
            out.append(None)
        elif col.kind == "datetime":
            out.append(format_time(int(value), zone))
        elif col.kind == "integer":
            out.append(int(value))
        else:
            out.append(str(value))
    return out


def neutralize(value: str) -> str:
    """``value`` made inert for spreadsheets: a leading ``= + - @``, tab or carriage return gets a ``'``
    prefix (OWASP CSV-injection advice), so ``=HYPERLINK(...)`` is shown as text, never evaluated."""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


def csv_chunk(
    rows: Iterable[Row], columns: Sequence[str], *, header: bool, bom: bool, neutralize_formulas: bool
) -> bytes:
    """Rows as RFC 4180 CSV (CRLF line ends, fields quoted when they hold ``,`` ``"`` CR or LF), UTF-8.
    ``header``: start with the column names (and the UTF-8 BOM when ``bom``, for Excel)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow(
            ["" if v is None else (neutralize(v) if neutralize_formulas and isinstance(v, str) else v) for v in row]
        )
    data = buf.getvalue().encode()
    return BOM + data if header and bom else data


def ndjson_chunk(rows: Iterable[Row], columns: Sequence[str]) -> bytes:
    """Rows as NDJSON: one JSON object per line (keys in column order), UTF-8, ``\\n`` after each."""
    return b"".join(
        json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        for row in rows
    )


def staged_chunk(rows: Iterable[Row]) -> bytes:
    """Rows staged for a renderer that needs the whole report (XLSX, PDF): one JSON array per line."""
    return b"".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for row in rows)


def read_staged(lines: Iterable[bytes]) -> Iterable[Row]:
    """The rows of staged lines (:func:`staged_chunk`)."""
    for line in lines:
        if line.strip():
            row: Row = json.loads(line)
            yield row


def render_xlsx(
    rows: Iterable[Row],
    rtype: ReportType,
    out: Path,
    created: datetime,
    *,
    sheet_rows: int = XLSX_MAX_ROWS_PER_SHEET,
) -> int:
    """Write ``rows`` to an XLSX file at ``out`` with XlsxWriter in constant-memory mode (each row is flushed
    as it is written). A sheet holds ``sheet_rows`` rows including its header; the next row starts a new
    sheet (``data``, ``data 2``…). Strings are written as strings, never as formulas, URLs or numbers, so a
    cell ``=HYPERLINK(...)`` is inert. Times stay RFC 3339 strings with their offset (an Excel date has no
    zone). The file is byte-for-byte reproducible: fixed document times (``created``) and zip entry times.

    :returns: the number of sheets written.
    """
    import xlsxwriter  # imported here: only the worker renders

    workbook = xlsxwriter.Workbook(
        str(out),
        {
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
            "tmpdir": str(out.parent),
        },
    )
    workbook.set_properties({"title": rtype.title, "created": created.replace(tzinfo=None)})
    sheets = 0
    sheet: Any = None
    line = sheet_rows
    for row in rows:
        if line >= sheet_rows:
            sheets += 1
            sheet = workbook.add_worksheet("data" if sheets == 1 else f"data {sheets}")
            for c, name in enumerate(rtype.column_names):
                sheet.write_string(0, c, name)
            line = 1
        for c, value in enumerate(row):
            if isinstance(value, int):
                sheet.write_number(line, c, value)
            elif value is not None:
                sheet.write_string(line, c, value)
        line += 1
    if sheets == 0:
        sheet = workbook.add_worksheet("data")
        for c, name in enumerate(rtype.column_names):
            sheet.write_string(0, c, name)
        sheets = 1
    workbook.close()
    return sheets


def _latin1(text: str) -> str:
    """The PDF's core fonts are Latin-1: other characters are shown as ``?``."""
    return text.encode("latin-1", "replace").decode("latin-1")


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
    Memory: the shown rows and one counter per distinct group value. Reproducible: the document's
    creation time is ``created``.
    """
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    group_index = rtype.column_names.index(rtype.group_by)
    counts: Counter[str] = Counter()
    shown: list[Row] = []
    for row in rows:
        counts[str(row[group_index] or "")] += 1
        if len(shown) < PDF_TABLE_ROWS:
            shown.append(row)

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
