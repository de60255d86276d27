"""`bulktag inventory`: a snapshot of the resources and tags discovery sees, one JSON line each.

Teams keep one before and one after a migration. Every (account, region) is walked at once, 100
resources a page at its GetResources quota, and the lines stream to a local file or an S3 object
(multipart past 8 MiB, SSE-KMS or SSE-S3), never held whole in memory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulktag.api_limits import PAGE_SIZE as PAGE
from bulktag.app.export import (
    Destination,
    ExportError,
    LocalFileWriter,
    describe_s3_error,
    is_directory_target,
    parse_destination,
)
from bulktag.arn import ArnError, Shard, parse_arn
from bulktag.aws.clients import ClientPool
from bulktag.aws.rate_limiter import ShardLimiter
from bulktag.aws.reads import (
    TokenExpired,
    Unreadable,
    get_resources_page,
    is_call_error,
    list_resources_page,
    tags_of,
)
from bulktag.aws.s3 import S3ObjectWriter, s3_client
from bulktag.config import Settings
from bulktag.engine.discovery import Query, explorer_scope

CHUNK = 1 << 20


@dataclass
class Snapshot:
    location: str
    resources: int = 0
    per_shard: Counter[str] = field(default_factory=Counter)
    errors: dict[str, str] = field(default_factory=dict)


class _Lines:
    """Buffers JSON lines and hands ~1 MiB chunks to the writer, one at a time."""

    def __init__(self, writer: Any, describe: Callable[[Exception], str]) -> None:
        self.writer = writer
        self.describe = describe  # what an output error means, naming the destination
        self.buf = bytearray()
        self.lock = asyncio.Lock()

    async def add(self, lines: list[bytes]) -> None:
        async with self.lock:
            for line in lines:
                self.buf += line
            if len(self.buf) >= CHUNK:
                data, self.buf = bytes(self.buf), bytearray()
                await self._write(data)

    async def close(self) -> None:
        async with self.lock:
            if self.buf:
                await self._write(bytes(self.buf))
                self.buf = bytearray()
            try:
                await self.writer.close()
            except Exception as exc:
                if not is_call_error(exc):
                    raise
                raise ExportError(self.describe(exc)) from None

    async def _write(self, data: bytes) -> None:
        # Output errors are the snapshot's, not a shard's: they must not pass for "not read".
        try:
            await self.writer.write(data)
        except Exception as exc:
            if not is_call_error(exc):
                raise
            raise ExportError(self.describe(exc)) from None


async def _walk(clients: ClientPool, settings: Settings, account: str, region: str,
                query: Query | None, lines: _Lines, snap: Snapshot,
                scope: Callable[[Mapping[str, Any]], bool] | None = None) -> None:
    shard = Shard("aws", account, region)
    explorer = query is not None and query.explorer is not None
    limiter = ShardLimiter(settings.rate_for("ListResources" if explorer else "GetResources"))
    read_page = list_resources_page if explorer else get_resources_page
    token = None
    seen_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        while True:
            params = query.page_params(token) if query else \
                {"ResourcesPerPage": PAGE, **({"PaginationToken": token} if token else {})}
            # A snapshot is one pass: an expired token fails this shard, named in errors.
            resp = await read_page(clients, shard, limiter, params, settings)
            out = []
            for m in resp.get("ResourceTagMappingList", []):
                arn = m["ResourceARN"]
                if scope is not None and not scope(m):
                    continue
                try:
                    parsed = parse_arn(arn)
                    account_of, region_of, rtype = parsed.account, parsed.shard.region, \
                        parsed.resource_type
                except ArnError:
                    account_of, region_of, rtype = account, region, None
                account_of = account_of or m.get("OwningAccountId") or account
                region_of = region_of or m.get("Region") or region
                out.append(json.dumps({"arn": arn, "account": account_of, "region": region_of,
                                       "resource_type": rtype, "tags": tags_of(m),
                                       "seen_at": seen_at}, ensure_ascii=False).encode() + b"\n")
            await lines.add(out)
            snap.resources += len(out)
            snap.per_shard[f"{account or '(caller)'}/{region}"] += len(out)
            token = resp.get("PaginationToken")
            if not token:
                return
    except (Unreadable, TokenExpired) as exc:
        snap.errors[f"{account or '(caller)'}/{region}"] = str(exc) or "pagination token expired"


def _target(dest: Destination, output: str, stamp: str) -> tuple[str, Path | None]:
    name = f"inventory-{stamp}.jsonl"
    if dest.bucket is not None:
        return (f"{dest.prefix}/{name}" if dest.prefix else name), None
    path = Path(output) / name if is_directory_target(output) else Path(output)
    return str(path), path


async def take_snapshot(settings: Settings, output: str, accounts: list[str], regions: list[str],
                        query: Query | None, *, region: str | None = None,
                        kms_key_arn: str | None = None,
                        explorer_region: str | None = None) -> Snapshot:
    """Walk every (account, region) and write the snapshot; raises ExportError on the output."""
    dest = parse_destination(output)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    key, path = _target(dest, output, stamp)
    clients = ClientPool(settings)
    try:
        if dest.bucket is None:
            assert path is not None
            writer: Any = LocalFileWriter(path)
            try:
                await writer.open()
            except OSError as exc:
                raise ExportError(f"inventory to {output}: {exc}") from None
            return await _run(clients, settings, writer, str(path), accounts, regions, query,
                              lambda exc: f"inventory to {path}: {exc}", explorer_region)
        async with s3_client(settings, region) as s3:
            writer = S3ObjectWriter(s3, dest.bucket, key, content_type="application/x-ndjson",
                                    kms_key_arn=kms_key_arn)
            try:
                return await _run(clients, settings, writer, f"s3://{dest.bucket}/{key}",
                                  accounts, regions, query,
                                  lambda exc: describe_s3_error(exc, dest, key, kms_key_arn),
                                  explorer_region)
            except Exception as exc:
                if not is_call_error(exc):
                    raise
                raise ExportError(f"inventory to {output}: {exc}") from None
    finally:
        await clients.close()


async def _run(clients: ClientPool, settings: Settings, writer: Any, location: str,
               accounts: list[str], regions: list[str], query: Query | None,
               describe: Callable[[Exception], str], explorer_region: str | None = None
               ) -> Snapshot:
    snap = Snapshot(location)
    lines = _Lines(writer, describe)
    try:
        if query is not None and query.explorer is not None:
            # one walk over the view, where it lives, keeping the accounts and regions asked
            await _walk(clients, settings, "", explorer_region or settings.region or
                        "us-east-1", query, lines, snap, explorer_scope(accounts, regions, ""))
        else:
            await asyncio.gather(*(_walk(clients, settings, a, r, query, lines, snap)
                                   for a in accounts for r in regions))
        await lines.close()
    except BaseException:
        await writer.abort()
        raise
    return snap
