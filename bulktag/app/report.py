"""Per-item reports, streamed from the store a page at a time (flat memory on any job size);
their manifest (after S3 Batch Operations' completion report: counts per outcome, per account
and region and per error code, the files with row counts, sizes and SHA-256); and the per
account and region table `bulktag status` shows. Where the files go is export.py's business."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

from bulktag.api_limits import ARNS_PER_TAG_CALL as ARNS_PER_CALL
from bulktag.arn import ROUTE_EC2, Shard
from bulktag.policy.changes import after_of, kind_of, prior_of
from bulktag.store import Counts, Job, Store

COLUMNS = ("arn", "account", "region", "operation", "status", "attempts", "error_code",
           "http_status", "message", "finished_at", "route", "before", "after")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


async def report_records(
    store: Store, job_id: int, operation: str, *, failed_only: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """One dict per item with COLUMNS; failed_only keeps failed and invalid items. `route` is
    the route stored with the item (README "Two routes"). `before` and `after` are the keys a
    succeeded item's call changed, with their values before and after (None: absent); None for
    items that changed nothing or kept no before-image."""
    job = await store.get_job(job_id)
    kind = kind_of(operation, job.options.undo_of if job is not None else None,
                   bool(job is not None and job.options.transform))
    async for row in store.report_rows(job_id, unsuccessful_only=failed_only):
        before = after = None
        if row.before is not None and row.tagset is not None and row.state == "succeeded":
            image = json.loads(row.before)
            before = prior_of(image)
            after = after_of(kind, json.loads(row.tagset), image)
        yield {
            "arn": row.arn,
            "account": row.account,
            "region": row.region,
            "operation": "transform" if kind == "transform" else operation,
            "status": row.state,
            "attempts": row.attempts,
            "error_code": row.error_code,
            "http_status": row.http_status,
            "message": row.message,
            "finished_at": _iso(row.finished_at),
            "route": row.route,
            "before": before,
            "after": after,
        }


async def write_report(
    store: Store, job_id: int, operation: str, out: TextIO, *, fmt: str = "csv",
    failed_only: bool = False,
) -> int:
    """Write the report to `out` as csv or jsonl; returns the number of rows."""
    n = 0
    async for chunk, rows in report_chunks(store, job_id, operation, fmt=fmt,
                                           failed_only=failed_only):
        out.write(chunk.decode("utf-8"))
        n += rows
    return n


# -- report files and their manifest -------------------------------------------------------------

CHUNK_BYTES = 1 << 20  # rows are encoded and handed to the writer this many bytes at a time
MANIFEST_VERSION = 1
_COUNT_STATES = ("pending", "leased", "succeeded", "skipped", "failed", "invalid", "cancelled")


def rows_file_name(fmt: str, failed_only: bool) -> str:
    return f"{'failed' if failed_only else 'report'}.{fmt}"


async def report_chunks(
    store: Store, job_id: int, operation: str, *, fmt: str = "csv", failed_only: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
) -> AsyncIterator[tuple[bytes, int]]:
    """The report encoded as UTF-8 (csv with a header, or jsonl), as (chunk, rows in it) pairs
    of about chunk_bytes each: a writer gets few large writes, and no more than a chunk is held."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS) if fmt == "csv" else None
    if writer:
        writer.writeheader()
    rows = 0
    async for record in report_records(store, job_id, operation, failed_only=failed_only):
        if writer:
            for column in ("before", "after"):  # a cell holds the map as JSON
                if record[column] is not None:
                    record[column] = json.dumps(record[column], ensure_ascii=False,
                                                sort_keys=True)
            writer.writerow(record)
        else:
            buf.write(json.dumps(record, ensure_ascii=False) + "\n")
        rows += 1
        if buf.tell() >= chunk_bytes:
            yield buf.getvalue().encode("utf-8"), rows
            buf.seek(0)
            buf.truncate()
            rows = 0
    if buf.tell() or rows:
        yield buf.getvalue().encode("utf-8"), rows


@dataclass(slots=True)
class WrittenFile:
    """A report file as the manifest lists it."""

    name: str
    location: str
    rows: int = 0
    bytes: int = 0
    sha256: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "location": self.location, "rows": self.rows,
                "bytes": self.bytes, "sha256": self.sha256}


async def stream_report(
    store: Store, job_id: int, operation: str, write: Callable[[bytes], Awaitable[None]], *,
    fmt: str, failed_only: bool, name: str, location: str,
) -> WrittenFile:
    """Feed the encoded report to `write`, counting rows and bytes and hashing as it goes."""
    digest = hashlib.sha256()
    written = WrittenFile(name, location)
    async for chunk, rows in report_chunks(store, job_id, operation, fmt=fmt,
                                           failed_only=failed_only):
        await write(chunk)
        digest.update(chunk)
        written.rows += rows
        written.bytes += len(chunk)
    written.sha256 = digest.hexdigest()
    return written


def _state_counts(counts: Counts) -> dict[str, int]:
    return {s: counts[s] for s in _COUNT_STATES} | {"total": counts.total}


async def build_manifest(
    store: Store, job: Job, files: list[WrittenFile], *, fmt: str, failed_only: bool,
    destination: str,
) -> dict[str, Any]:
    """The manifest of a report, after S3 Batch Operations' completion report: what the job
    was, how its items ended (overall, per account and region, per error code) and the files
    written with their row counts, sizes and SHA-256 checksums."""
    counts = await store.counts(job.id)
    shards = []
    for (shard, route), c in (await store.route_counts(job.id)).items():
        shards.append({"partition": shard.partition if shard else None,
                       "account": shard.account if shard else None,
                       "region": shard.region if shard else None,
                       "route": route if shard else None,
                       "counts": _state_counts(c)})
    shards.sort(key=lambda s: (s["partition"] or "", s["account"] or "", s["region"] or "",
                               s["route"] or ""))
    errors = [{"code": code, "count": n} for code, n in await store.error_counts(job.id, 1000)]
    return {
        "manifest_version": MANIFEST_VERSION,
        "job": job.id,
        "name": job.name,
        "operation": job.kind,
        "transform": job.options.transform,
        "role_name": job.options.role_name,  # how it reached its accounts (no secret)
        "tags": job.options.tags if job.kind == "tag" else None,
        "keys": job.options.keys if job.operation == "untag" else None,
        "state": job.state,
        "reason": job.reason,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "generated_at": _iso(time.time()),
        "format": fmt,
        "failed_only": failed_only,
        "columns": list(COLUMNS),
        "destination": destination,
        "counts": _state_counts(counts),
        "shards": shards,
        "errors": errors,
        "files": [f.as_dict() for f in files],
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# -- the per account and region summary ----------------------------------------------------------



def quota_arns(settings_rate: float, per_call: int = ARNS_PER_CALL) -> float:
    """ARNs/s one shard can reach at `settings_rate` calls/s of full batches."""
    return settings_rate * per_call


def shard_table(
    route_counts: dict[tuple[Shard | None, str], Counts], elapsed: float | None,
    quotas: dict[str, float],
) -> list[dict[str, Any]]:
    """One row per account, region and route: done (succeeded), skipped, failed (incl.
    invalid), cancelled, open, and the rate reached (items that went to a call — succeeded or
    failed — per second of the job's elapsed time; skipped items were settled by the read and
    cost no call) against the route's quota in ARNs/s (`quotas` by route). Invalid rows that
    never got a shard come last."""
    rows = []
    for (shard, route), c in route_counts.items():
        worked = c["succeeded"] + c["failed"]
        rate = worked / elapsed if elapsed and shard is not None else None
        rows.append({
            "partition": shard.partition if shard else None,
            "account": shard.account if shard else None,
            "region": shard.region if shard else None,
            "route": route,
            "done": c["succeeded"], "skipped": c["skipped"],
            "failed": c["failed"] + c["invalid"], "cancelled": c["cancelled"], "open": c.open,
            "rate": None if rate is None else round(rate, 2),
            "quota": quotas.get(route) if shard is not None else None,
        })
    rows.sort(key=lambda r: (r["account"] is None, r["account"] or "", r["region"] or "",
                             r["route"] != ROUTE_EC2))
    return rows


def quota_share(rate: float, quota: float) -> int:
    """A shard's rate as a share of its quota, in %, never above 100: items settled without a
    call (refused before sending) count as worked but cost no quota."""
    return min(100, round(100 * rate / quota)) if quota else 0


def render_shard_table(rows: list[dict[str, Any]], limit: int = 20) -> list[str]:
    """The table as text lines (the `limit` biggest shards; --json has them all)."""
    if not rows:
        return []
    shown = sorted(rows, key=lambda r: -(r["done"] + r["skipped"] + r["failed"] + r["open"]))
    shown = [r for r in rows if r in shown[:limit]]
    lines = ["  per account and region:",
             f"    {'account':<14}{'region':<16}{'route':<13}{'done':>9}{'skipped':>9}"
             f"{'failed':>9}{'open':>9}{'ARN/s':>9}  of quota"]
    for r in shown:
        if r["account"] is None:
            where = f"{'(invalid input)':<43}"
        else:
            where = f"{r['account'] or 'caller':<14}{r['region']:<16}{r['route']:<13}"
        if r["rate"] is None or not r["quota"]:
            rate = f"{'-':>9}  -"
        else:
            rate = f"{r['rate']:>9.1f}  {r['quota']:g} ({quota_share(r['rate'], r['quota'])}%)"
        extra = f"  cancelled {r['cancelled']}" if r["cancelled"] else ""
        lines.append(f"    {where}{r['done']:>9}{r['skipped']:>9}{r['failed']:>9}"
                     f"{r['open']:>9}{rate}{extra}")
    if len(rows) > len(shown):
        lines.append(f"    ... and {len(rows) - len(shown)} more (`--json` lists them all)")
    return lines
