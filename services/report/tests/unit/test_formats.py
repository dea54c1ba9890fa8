"""Pure logic of the report service: the report-type table, CSV neutralisation and RFC 4180, time zones,
NDJSON, XLSX sheets and reproducibility, the PDF, link signing, parameters and deduplication keys."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from pypdf import PdfReader

from novapulse_report.api import parse_range
from novapulse_report.errors import InvalidParameters, LinkExpired, LinkInvalid
from novapulse_report.formats import (
    csv_chunk,
    format_time,
    ndjson_chunk,
    neutralize,
    render_pdf,
    render_xlsx,
    row_values,
)
from novapulse_report.models import Format, ReportTypeName
from novapulse_report.report_types import FORMATS, REPORT_TYPES
from novapulse_report.reports import ReportRequest, dedup_key, normalize
from novapulse_report.signing import LinkSigner
from novapulse_runtime.catalog import CATALOG
from novapulse_runtime.roles import MANAGERS

pytestmark = pytest.mark.unit

AUTH = REPORT_TYPES["auth_activity"]
T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


def test_the_report_type_table() -> None:
    assert set(REPORT_TYPES) == {"auth_activity", "webhook_outcomes", "notification_deliveries", "workflow_runs"}
    for rtype in REPORT_TYPES.values():
        names = rtype.column_names
        assert names[0] == "time"
        assert rtype.columns[0].kind == "datetime"
        assert len(set(names)) == len(names)
        assert set(rtype.filters) <= set(names)
        assert rtype.group_by in names
        assert rtype.roles
        for event_type in rtype.fed_by:  # every feeding type exists in the catalogue
            assert CATALOG.lookup(event_type) is not None, event_type
    assert AUTH.roles == MANAGERS
    assert set(FORMATS) == {"csv", "ndjson", "xlsx", "pdf"}
    assert set(get_args(ReportTypeName)) == set(REPORT_TYPES)
    assert set(get_args(Format)) == set(FORMATS)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_formula_neutralisation(cell: str, expected: str) -> None:
    assert neutralize(cell) == expected


def test_csv_is_rfc4180_with_optional_bom_and_opt_out() -> None:
    rows = [["=cmd|' /C calc'!A0", 'say "hi", bye\nnext', 3, None]]
    cols = ["a", "b", "c", "d"]
    data = csv_chunk(rows, cols, header=True, bom=True, neutralize_formulas=True)
    assert data.startswith(b"\xef\xbb\xbf")
    text = data[3:].decode()
    assert text.endswith("\r\n")
    assert text.startswith("a,b,c,d\r\n")
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed == [cols, ["'=cmd|' /C calc'!A0", 'say "hi", bye\nnext', "3", ""]]
    assert '"say ""hi"", bye\nnext"' in text  # quotes doubled, field quoted (RFC 4180 §2.6-2.7)
    raw = csv_chunk(rows, cols, header=False, bom=True, neutralize_formulas=False)
    assert not raw.startswith(b"\xef\xbb\xbf")  # the BOM starts the file only
    assert raw.decode().startswith("=cmd")


def test_times_are_written_in_the_zone_with_their_offset() -> None:
    ms = int(T0.timestamp() * 1000)  # 00:30 UTC on the day Paris moves to summer time (at 01:00 UTC)
    assert format_time(ms, ZoneInfo("UTC")) == "2026-03-29T00:30:00.000+00:00"
    assert format_time(ms, ZoneInfo("Europe/Paris")) == "2026-03-29T01:30:00.000+01:00"
    assert format_time(ms + 3_600_000, ZoneInfo("Europe/Paris")) == "2026-03-29T03:30:00.000+02:00"
    assert format_time(ms, ZoneInfo("America/St_Johns")) == "2026-03-28T22:00:00.000-02:30"
    row = row_values(AUTH, {"time": ms, "event": "mfa.enabled", "user_id": "u1"}, ZoneInfo("Asia/Kolkata"))
    assert row[:3] == ["2026-03-29T06:00:00.000+05:30", "mfa.enabled", "u1"]
    assert row[3:] == [None] * (len(AUTH.columns) - 3)


def test_ndjson_keeps_types_and_column_order() -> None:
    data = ndjson_chunk([["t", "x", 3], ["u", None, 4]], ["time", "s", "n"])
    lines = data.decode().splitlines()
    assert [json.loads(line) for line in lines] == [{"time": "t", "s": "x", "n": 3}, {"time": "u", "s": None, "n": 4}]
    assert list(json.loads(lines[0])) == ["time", "s", "n"]


def test_xlsx_sheets_split_and_the_file_is_reproducible(tmp_path: Path) -> None:
    rtype = REPORT_TYPES["webhook_outcomes"]
    rows = [["2026-01-01T00:00:00.000+00:00", "failed", "ep", f"m{i}", "=1+1", i, "err"] for i in range(7)]
    created = datetime(2026, 1, 2, tzinfo=UTC)
    first, second = tmp_path / "a.xlsx", tmp_path / "b.xlsx"
    assert render_xlsx(iter(rows), rtype, first, created, sheet_rows=3) == 4  # 2 data rows per sheet
    render_xlsx(iter(rows), rtype, second, created, sheet_rows=3)
    assert first.read_bytes() == second.read_bytes()
    book = openpyxl.load_workbook(first, read_only=True)
    assert book.sheetnames == ["data", "data 2", "data 3", "data 4"]
    values = [r for ws in book.worksheets for r in ws.iter_rows(min_row=2, values_only=True)]
    assert [v[3] for v in values] == [f"m{i}" for i in range(7)]
    assert values[0][4] == "=1+1"  # a string, never a formula
    assert values[6][5] == 6
    book.close()


def test_pdf_summary(tmp_path: Path) -> None:
    rows = [
        ["2026-01-01T00:00:00.000+00:00", "mfa.enabled" if i % 3 else "user.disabled", f"u{i}"] + [None] * 5
        for i in range(300)
    ]
    out = tmp_path / "r.pdf"
    created = datetime(2026, 1, 2, tzinfo=UTC)
    render_pdf(iter(rows), AUTH, out, created, parameters=[("time zone", "Europe/Paris")], total_rows=300)
    again = tmp_path / "r2.pdf"
    render_pdf(iter(rows), AUTH, again, created, parameters=[("time zone", "Europe/Paris")], total_rows=300)
    assert out.read_bytes() == again.read_bytes()
    text = "\n".join(page.extract_text() for page in PdfReader(out).pages)
    assert "Sign-in, MFA and membership activity" in text
    assert "First 200 of 300 rows" in text
    assert "mfa.enabled" in text
    assert "200" in text
    assert "100" in text
    assert "Europe/Paris" in text


def test_signed_links() -> None:
    signer = LinkSigner(b"k" * 32)
    path = signer.path("rp_1", "o1", 2000)
    query = dict(p.split("=") for p in path.split("?")[1].split("&"))
    signer.check("rp_1", "o1", query["expires"], query["sig"], now_s=1999)
    with pytest.raises(LinkExpired):
        signer.check("rp_1", "o1", query["expires"], query["sig"], now_s=2001)
    with pytest.raises(LinkInvalid):  # a longer expiry is a tampered link, not an expired one
        signer.check("rp_1", "o1", "9999", query["sig"], now_s=2001)
    with pytest.raises(LinkInvalid):
        signer.check("rp_1", "o2", query["expires"], query["sig"], now_s=1)
    with pytest.raises(LinkInvalid):
        signer.check("rp_1", "o1", query["expires"], query["sig"][:-1] + "0", now_s=1)
    with pytest.raises(LinkInvalid):
        signer.check("rp_1", "o1", "-1", query["sig"], now_s=1)
    with pytest.raises(LinkInvalid):
        LinkSigner(b"x" * 32).check("rp_1", "o1", query["expires"], query["sig"], now_s=1)


def test_parameters_and_dedup_key() -> None:
    end = datetime(2026, 2, 1, tzinfo=UTC)
    base = ReportRequest(
        "auth_activity", "csv", T0.replace(month=1), end, "Europe/Paris", {"user_id": "u", "event": "e"}
    )
    rtype, params = normalize(base, 366)
    assert rtype is AUTH
    assert list(params["filters"]) == ["event", "user_id"]
    same = ReportRequest(
        "auth_activity", "csv", T0.replace(month=1), end, "Europe/Paris", {"event": "e", "user_id": "u"}
    )
    assert dedup_key("o", "auth_activity", "csv", params) == dedup_key(
        "o", "auth_activity", "csv", normalize(same, 366)[1]
    )
    assert dedup_key("o", "auth_activity", "csv", params) != dedup_key("o2", "auth_activity", "csv", params)
    assert dedup_key("o", "auth_activity", "csv", params) != dedup_key("o", "auth_activity", "xlsx", params)
    start = T0.replace(month=1)
    for bad in (
        ReportRequest("nope", "csv", start, end),
        ReportRequest("auth_activity", "csv", end, start),
        ReportRequest("auth_activity", "csv", start, start),
        ReportRequest("auth_activity", "csv", start, end, "Mars/Olympus"),
        ReportRequest("auth_activity", "csv", start, end, "../../etc/passwd"),
        ReportRequest("auth_activity", "csv", start, end, filters={"email": "x"}),
        ReportRequest("auth_activity", "csv", start.replace(year=2024), end),
    ):
        with pytest.raises(InvalidParameters):
            normalize(bad, 366)


def test_range_header() -> None:
    assert parse_range(None) == (None, None)
    assert parse_range("bytes=0-9") == (0, 9)
    assert parse_range("bytes=10-") == (10, None)
    assert parse_range("bytes=-5") == (None, 5)
    assert parse_range("bytes=0-1,4-5") == (None, None)
    assert parse_range("items=0-1") == (None, None)
    assert parse_range("bytes=9-2") == (None, None)
