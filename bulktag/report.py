"""Per-item reports, streamed from the store a page at a time (flat memory on any job size)."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any, TextIO

from .store import Store

COLUMNS = ("arn", "account", "region", "operation", "status", "attempts", "error_code",
           "http_status", "message", "finished_at")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


async def report_records(
    store: Store, job_id: int, operation: str, *, failed_only: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """One dict per item with COLUMNS; failed_only keeps failed and invalid items."""
    async for row in store.report_rows(job_id, unsuccessful_only=failed_only):
        yield {
            "arn": row["arn"],
            "account": row["account"],
            "region": row["region"],
            "operation": operation,
            "status": row["state"],
            "attempts": row["attempts"],
            "error_code": row["error_code"],
            "http_status": row["http_status"],
            "message": row["message"],
            "finished_at": _iso(row["finished_at"]),
        }


async def write_report(
    store: Store, job_id: int, operation: str, out: TextIO, *, fmt: str = "csv",
    failed_only: bool = False,
) -> int:
    """Write the report to `out` as csv or jsonl; returns the number of rows."""
    n = 0
    writer = csv.DictWriter(out, fieldnames=COLUMNS) if fmt == "csv" else None
    if writer:
        writer.writeheader()
    async for record in report_records(store, job_id, operation, failed_only=failed_only):
        if writer:
            writer.writerow(record)
        else:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        n += 1
    return n
