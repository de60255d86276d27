"""Sources and checks of the submission tests: ARNs of one account, source files in each format
(lines, CSV, JSONL), a refused `submit()` and the check that it left nothing in the store, and
the stored rows of a job read with plain sqlite3. tests/integration/test_submit.py submits
in-process, tests/e2e/test_submit.py through the CLI."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from bulktag.app.submit import Request, SubmissionRefused, submit
from bulktag.store import Store

ACCOUNT = "123456789012"


def arn(n: int, region: str = "us-east-1") -> str:
    return f"arn:aws:ec2:{region}:{ACCOUNT}:instance/i-{n:08d}"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def store_is_empty(db: Path) -> None:
    """A refused submission keeps nothing: no job, no item, no counter."""
    if not db.exists():
        return
    with sqlite3.connect(db) as con:
        for table in ("jobs", "items", "counts", "error_counts"):
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table


async def refused(db: Path, sources: list[Path], request: Request) -> str:
    async with await Store.open(db) as store:
        with pytest.raises(SubmissionRefused) as info:
            await submit(store, [str(s) for s in sources], request)
    store_is_empty(db)
    return str(info.value)


def item_rows(db: Path, job: int) -> list[sqlite3.Row]:
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return con.execute(
            "SELECT i.arn, i.state, i.line, i.error_code, i.message, t.body FROM items i "
            "LEFT JOIN tagsets t ON t.id = i.tagset_id WHERE job_id = ? ORDER BY i.id", (job,)
        ).fetchall()
