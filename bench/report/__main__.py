"""Report benchmark: ``python -m bench.report`` (``make bench-report``).

Starts its own Redis and MongoDB-wire server, seeds ``BENCH_REPORT_ROWS`` rows (default 500,000) of the
``auth_activity`` data set, then, on the same servers:

1. the ceilings: one pymongo cursor over the same rows, in the same order, into stdlib ``csv.writer`` on a
   local file (no time zone formatting, no parts, no GridFS); and the same into XlsxWriter in
   ``constant_memory`` mode (XlsxWriter's own ceiling, printed beside the report's XLSX figure);
2. the real worker process (``python -m novapulse_report worker``) generating the same rows as CSV, then as
   XLSX: rows/s from the report's claim to its end (parts, checkpoints, GridFS, assembly and SHA-256
   included);
3. the worker's peak RSS (``VmHWM`` of the process, after both reports).

The last line printed is ``report-bench: csv_vs_raw=<x> csv_rows_per_s=<n> xlsx_rows_per_s=<n> peak_rss_mb=<n>``.
The worker runs with its default ``BATCH_ROWS`` and ``CHUNK_ROWS`` (``BENCH_REPORT_BATCH_ROWS`` and
``BENCH_REPORT_CHUNK_ROWS`` override them). ``BENCH_REPORT_PROFILE=<dir>`` also samples the worker with py-spy
during each report (``<dir>/<format>.txt``, collapsed stacks, subprocesses and idle time included).
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from novapulse_devkit.servers import free_port, mongo_server, redis_server
from novapulse_report.repository import Fact, Repository, RowQuery, new_report_id

ROWS = int(os.environ.get("BENCH_REPORT_ROWS", "500000"))
ORG = "bench-org"
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DB = "novapulse_report_bench"


def facts(start: int, stop: int) -> list[Fact]:
    return [
        Fact(
            f"ev-{i:08d}",
            "auth_activity",
            ORG,
            START_MS + i * 50,
            {
                "event": "mfa.challenge_failed" if i % 7 else "user.login_blocked",
                "user_id": f"u{i % 997}",
                "actor_id": f"u{i % 997}",
                "ip": f"203.0.113.{i % 250}",
                "detail": f"attempt {i % 5}" if i % 11 else '=HYPERLINK("http://x","y")',
            },
        )
        for i in range(start, stop)
    ]


async def seed(repo: Repository) -> None:
    step = 20_000
    for start in range(0, ROWS, step):
        await repo.add_facts(facts(start, min(ROWS, start + step)), 0)


async def raw_loop(repo: Repository, out: Path) -> float:
    """Rows/s of the ceiling: pymongo cursor → csv.writer."""
    query = RowQuery("auth_activity", ORG, START_MS, START_MS + ROWS * 50 + 1, 2**62).to_query()
    columns = ["time", "event", "user_id", "actor_id", "role", "email", "ip", "detail"]
    started = time.perf_counter()
    count = 0
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        async for doc in repo.facts.find(query).sort("key", 1).batch_size(5000):
            writer.writerow([doc.get("at_ms")] + [doc.get(f"v_{c}", "") for c in columns[1:]])
            count += 1
    assert count == ROWS, count
    return ROWS / (time.perf_counter() - started)


async def raw_xlsx_loop(repo: Repository, out: Path) -> float:
    """Rows/s of XlsxWriter's own ceiling: the same pymongo cursor → XlsxWriter in ``constant_memory`` mode,
    the same 8 cells per row (the time as the stored epoch-ms number, as in the CSV ceiling; the rest as
    strings), closed into a file (zip included); no parts, no GridFS."""
    import xlsxwriter

    query = RowQuery("auth_activity", ORG, START_MS, START_MS + ROWS * 50 + 1, 2**62).to_query()
    columns = ["time", "event", "user_id", "actor_id", "role", "email", "ip", "detail"]
    started = time.perf_counter()
    book = xlsxwriter.Workbook(
        str(out), {"constant_memory": True, "strings_to_formulas": False, "tmpdir": str(out.parent)}
    )
    sheet = book.add_worksheet("data")
    for c, name in enumerate(columns):
        sheet.write_string(0, c, name)
    line = 1
    async for doc in repo.facts.find(query).sort("key", 1).batch_size(5000):
        sheet.write_number(line, 0, doc["at_ms"])
        for c, name in enumerate(columns[1:], 1):
            value = doc.get(f"v_{name}")
            if value is not None:
                sheet.write_string(line, c, value)
        line += 1
    book.close()
    assert line == ROWS + 1, line
    return ROWS / (time.perf_counter() - started)


async def generate(repo: Repository, fmt: str, worker_pid: int) -> float:
    """Rows/s of the worker for one report in ``fmt`` (claim to end)."""
    profiler = profile(worker_pid, fmt)
    params = {
        "start_ms": START_MS,
        "end_ms": START_MS + ROWS * 50 + 1,
        "time_zone": "Europe/Paris",
        "filters": {},
        "csv_bom": False,
        "neutralize_formulas": True,
    }
    now = int(time.time() * 1000)
    report = await repo.insert_report(
        report_id=new_report_id(now),
        org_id=ORG,
        requested_by="bench",
        type_="auth_activity",
        format_=fmt,
        params=params,
        dedup_key=f"bench-{fmt}",
        now_ms=now,
        estimated_total=ROWS,
    )
    while True:
        doc: Any = await repo.reports.find_one({"_id": report.id})
        if doc["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.2)
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(60)
    assert doc["status"] == "succeeded", doc
    assert int(doc["row_count"]) == ROWS
    seconds = (int(doc["finished_ms"]) - int(doc["started_ms"])) / 1000
    return ROWS / seconds


def profile(pid: int, fmt: str) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the worker until interrupted, when ``BENCH_REPORT_PROFILE`` names a directory."""
    where = os.environ.get("BENCH_REPORT_PROFILE")
    if not where:
        return None
    Path(where).mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    argv = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--idle", "--threads", "--rate", "50"]
    return subprocess.Popen([*argv, "--output", f"{where}/{fmt}.txt"], stdout=subprocess.DEVNULL)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(tmp: Path) -> str:
    redis_port, mongo_port = free_port(), free_port()
    servers = [redis_server(redis_port, tmp / "redis").start(), mongo_server(mongo_port, tmp / "mongo").start()]
    mongo_url = f"mongodb://127.0.0.1:{mongo_port}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    worker: subprocess.Popen[bytes] | None = None
    try:
        repo = Repository(client[DB])
        await repo.ensure_indexes()
        t = time.perf_counter()
        await seed(repo)
        print(f"seeded {ROWS} rows in {time.perf_counter() - t:.1f} s", flush=True)
        raw = await raw_loop(repo, tmp / "raw.csv")
        print(f"raw pymongo → csv.writer: {raw:,.0f} rows/s", flush=True)
        raw_xlsx = await raw_xlsx_loop(repo, tmp / "raw.xlsx")
        print(f"raw pymongo → XlsxWriter (constant_memory): {raw_xlsx:,.0f} rows/s", flush=True)
        env = dict(os.environ) | {
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "MONGO_URL": mongo_url,
            "MONGO_DB": DB,
            "HTTP_HOST": "127.0.0.1",
            "WORKER_HTTP_PORT": str(free_port()),
            "REPORT_DOWNLOAD_SECRET": "bench-only-report-link-secret-0123456789",
            "POLL_INTERVAL_SECONDS": "0.05",
            "BATCH_ROWS": os.environ.get("BENCH_REPORT_BATCH_ROWS", "2000"),
            "CHUNK_ROWS": os.environ.get("BENCH_REPORT_CHUNK_ROWS", "20000"),
            "LOG_LEVEL": "WARNING",
        }
        with (tmp / "worker.log").open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "novapulse_report", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        csv_rate = await generate(repo, "csv", worker.pid)
        print(f"report csv: {csv_rate:,.0f} rows/s ({csv_rate / raw:.2f}x raw)", flush=True)
        print(f"worker peak RSS after the CSV: {peak_rss_mb(worker.pid):.0f} MB", flush=True)
        xlsx_rate = await generate(repo, "xlsx", worker.pid)
        print(f"report xlsx: {xlsx_rate:,.0f} rows/s ({xlsx_rate / raw_xlsx:.2f}x XlsxWriter's ceiling)", flush=True)
        rss = peak_rss_mb(worker.pid)
        return (
            f"report-bench: csv_vs_raw={csv_rate / raw:.2f} csv_rows_per_s={csv_rate:.0f} "
            f"xlsx_rows_per_s={xlsx_rate:.0f} peak_rss_mb={rss:.0f}"
        )
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        await client.close()
        for server in servers:
            server.stop()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="novapulse-report-bench-") as tmp:
        line = asyncio.run(run(Path(tmp)))
    print(line, flush=True)


if __name__ == "__main__":
    main()
