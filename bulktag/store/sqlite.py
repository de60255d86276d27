"""The SQLite backend: jobs, items, tagsets and shards in one file on one host.

All SQL lives in `sql/sqlite.sql` and the numbered files of `migrations/sqlite/`. One aiosqlite
connection per store; a lock keeps one coroutine's transaction from interleaving with another's.
WAL mode with synchronous=NORMAL: a process killed at any point leaves the file consistent, and
other processes read while one writes. The file and its directory are private to their user
(0600 in 0700): they hold whole account inventories.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bulktag.arn import Shard
from bulktag.store.base import Store
from bulktag.store.models import (
    TERMINAL,
    ChangedItem,
    Claimed,
    Counts,
    Discovery,
    ItemRecord,
    ItemState,
    Job,
    JobOptions,
    JobState,
    NewItem,
    NewSyncRule,
    Outcome,
    PausedAccount,
    QueueTotals,
    ReportRow,
    Runnable,
    StoreError,
    SucceededItem,
    SyncMember,
    SyncRule,
    Worker,
    owner_host_pid,
    tagset_body,
)

TAGSET_CACHE = 50_000  # tagsets kept in memory per store before the cache starts over
SYNC_CHUNK = 10_000  # sync members written per transaction

_HERE = Path(__file__).resolve().parent


def migrations_dir(dialect: str) -> Path:
    """Inside a wheel the migrations sit in the package; in a source checkout, at the top."""
    for candidate in (_HERE.parent / "migrations" / dialect,
                      _HERE.parent.parent / "migrations" / dialect):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"bulktag's migrations/{dialect}/ folder is missing from this installation")


def load_queries(dialect: str) -> dict[str, str]:
    """The `-- name: x` blocks of sql/<dialect>.sql, by name."""
    queries: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in (_HERE / "sql" / f"{dialect}.sql").read_text().splitlines():
        if line.startswith("-- name: "):
            if name:
                queries[name] = "\n".join(lines).strip()
            name, lines = line.removeprefix("-- name: ").strip(), []
        elif name and not line.startswith("--"):
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip()
    return queries


Q = load_queries("sqlite")


def _statements(script: str) -> Iterable[str]:
    """Split a SQL script into complete statements (trigger bodies keep their semicolons)."""
    buf: list[str] = []
    for line in script.splitlines():
        buf.append(line)
        text = "\n".join(buf)
        if sqlite3.complete_statement(text):
            if text.strip() and not all(
                ln.strip().startswith("--") or not ln.strip() for ln in buf
            ):
                yield text
            buf = []
    rest = "\n".join(buf).strip()
    if rest and not all(ln.strip().startswith("--") for ln in rest.splitlines() if ln.strip()):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {rest[:80]!r}")


# -- bulk insert of items (add_items) ---------------------------------------------------------

_MAX_RUNS = 64  # runs of one shard and tagset per add_items call before one plain executemany
_RUN_SIZE = 50_000  # items per INSERT … SELECT at most (bounds the JSON text)


def _runs(items: Sequence[NewItem]) -> list[tuple[Shard | None, str | None, list[NewItem]]]:
    """Maximal runs of consecutive items with the same shard, tagset and route (invalid items:
    None, None), in input order, each at most _RUN_SIZE long."""
    runs: list[tuple[Shard | None, str | None, list[NewItem]]] = []
    cur_shard: Shard | None = None
    cur_body: str | None = None
    cur_route = ""
    run: list[NewItem] = []
    for it in items:
        if it.problem is not None or it.shard is None or it.tagset is None:
            shard, body = None, None
        else:
            shard, body = it.shard, it.tagset
        if run and len(run) < _RUN_SIZE and body == cur_body and it.route == cur_route and (
            shard is cur_shard or shard == cur_shard
        ):
            run.append(it)
            continue
        run = [it]
        runs.append((shard, body, run))
        cur_shard, cur_body, cur_route = shard, body, it.route
    return runs


def _regexp(pattern: str, text: str | None) -> bool:
    """SQLite's REGEXP operator (`text REGEXP pattern`), for migrations that need one."""
    return text is not None and re.search(pattern, text) is not None


def _pid_alive(pid: int) -> bool:
    """A process of this host that still runs (a zombie its parent has not reaped is dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _open_problem(path: str, exc: BaseException) -> str:
    """Say what is wrong with a store path in words an operator can act on."""
    parent = Path(path).parent
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"cannot write the store {path}: the disk is full; free space or use --db elsewhere"
    if os.path.isdir(path):
        return (f"cannot open the store {path}: it is a directory; give --db a file path "
                f"(e.g. {Path(path) / 'bulktag.db'})")
    blocker = next((p for p in [parent, *parent.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        return (f"cannot open the store {path}: {blocker} is a file, not a directory; give "
                "--db another path")
    if not parent.exists():
        return (f"cannot open the store {path}: the directory {parent} does not exist; "
                "create it or give --db another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        return (f"cannot open the store {path}: no permission to write in {parent}; "
                "give --db a path you own")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        return f"cannot open the store {path}: no permission to read and write this file"
    if "disk is full" in str(exc) or "database or disk is full" in str(exc):
        return f"cannot write the store {path}: the disk is full; free space or use --db elsewhere"
    return f"cannot open the store {path}: {exc}"


def _private_dir(directory: Path) -> None:
    """Create the store's directory 0700 (the store holds account inventories)."""
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700, exist_ok=True)


class SqliteStore(Store):
    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self.db = db
        self.location = path
        self._lock = asyncio.Lock()
        self._shard_ids: dict[Shard, int] = {}
        self._shards_by_id: dict[int, Shard] = {}
        self._tagset_ids: dict[str, int] = {}
        self._tagsets_by_id: dict[int, str] = {}
        self._count_trigger: bool | None = None  # items_count_insert exists (older stores)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    async def connect(cls, path: str, *, create: bool = True) -> SqliteStore:
        """Open (creating if needed and allowed) the store at path; apply pending migrations."""
        memory = path == ":memory:"
        if not memory and not create and not os.path.exists(path):
            parent = Path(path).parent
            blocker = next((p for p in [parent, *parent.parents] if p.exists()), None)
            if blocker is not None and not blocker.is_dir():  # a path that can never be one
                raise StoreError(_open_problem(path, FileNotFoundError(path)))
            raise StoreError(f"no store at {path} (nothing was submitted there yet); check --db "
                             "or BULKTAG_DB")
        try:
            if not memory:
                _private_dir(Path(path).parent)
                if not os.path.exists(path):
                    # 0600 before SQLite writes a byte of it
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise StoreError(_open_problem(path, exc)) from None
        if not memory and os.path.isdir(path):
            raise StoreError(_open_problem(path, IsADirectoryError(path)))
        pending = aiosqlite.connect(path, isolation_level=None)
        try:
            db = await pending
        except (OSError, sqlite3.Error) as exc:
            # aiosqlite's thread answers its stop request after the failure: wait for it here,
            # or it calls into an event loop already closed ("Event loop is closed").
            thread = getattr(pending, "_thread", None)
            if thread is not None:
                await asyncio.to_thread(thread.join, 5.0)
            raise StoreError(_open_problem(path, exc)) from None
        db.row_factory = sqlite3.Row
        try:
            await db.execute("PRAGMA busy_timeout = 60000")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            # 64 MiB of page cache (the default is 2 MiB): a bulk enqueue keeps the UNIQUE and
            # pending indexes' hot pages in memory instead of re-reading them from the WAL.
            await db.execute("PRAGMA cache_size = -65536")
            await db.create_function("regexp", 2, _regexp, deterministic=True)
            store = cls(db, path)
            await store._migrate()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await db.close()
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise StoreError(_open_problem(path, exc)) from None
            raise
        return store

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        await self._one(Q["metrics_ping"])

    async def _migrate(self) -> None:
        await self.db.execute(Q["create_migrations_table"])
        for path in sorted(migrations_dir("sqlite").glob("*.sql")):
            version = int(path.name.split("_", 1)[0])
            async with self.transaction():
                cur = await self.db.execute(Q["migration_applied"], (version,))
                if await cur.fetchone():
                    continue
                for statement in _statements(path.read_text()):
                    await self.db.execute(statement)
                await self.db.execute(Q["migration_done"], (version, path.name, time.time()))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE … COMMIT under the store's lock (rolled back on any error).

        aiosqlite runs a statement to its end even when the coroutine awaiting it is cancelled,
        so BEGIN, COMMIT and ROLLBACK are awaited to completion whatever happens: a Ctrl-C
        while another process holds the write lock never leaves the shared connection inside
        a transaction nobody will end.
        """
        async with self._lock:
            try:
                await self._landed("BEGIN IMMEDIATE")
            except asyncio.CancelledError:
                if self.db.in_transaction:
                    await self._landed("ROLLBACK")
                raise
            try:
                yield
            except BaseException:
                await self._landed("ROLLBACK")
                raise
            else:
                await self._landed("COMMIT")

    async def _landed(self, sql: str) -> None:
        """Execute `sql`; if cancelled meanwhile, wait until it has run, then re-raise."""
        task = asyncio.ensure_future(self.db.execute(sql))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await task
            raise

    async def _one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        async with self._lock:
            cur = await self.db.execute(sql, params)
            row = await cur.fetchone()
            await cur.close()
            return row

    async def _all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        async with self._lock:
            cur = await self.db.execute(sql, params)
            rows = await cur.fetchall()
            await cur.close()
            return list(rows)

    async def _write(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        async with self._lock:
            cur = await self.db.execute(sql, params)
            n = cur.rowcount
            await cur.close()
            return n

    # -- jobs ------------------------------------------------------------------------------

    async def create_job(
        self,
        operation: str,
        *,
        options: JobOptions,
        name: str | None = None,
        priority: int = 0,
        owner: str | None = None,
    ) -> int:
        row = await self._one(
            Q["create_job"],
            {
                "name": name,
                "operation": operation,
                "priority": priority,
                "options": options.to_json(),
                "owner": owner,
                "now": time.time(),
            },
        )
        return int(row[0])

    async def get_job(self, job_id: int) -> Job | None:
        row = await self._one(Q["get_job"], (job_id,))
        return _job(row) if row else None

    async def list_jobs(self) -> list[Job]:
        return [_job(r) for r in await self._all(Q["list_jobs"])]

    async def set_job_state(self, job_id: int, state: JobState,
                            reason: str | None = None) -> None:
        await self._write(
            Q["set_job_state"],
            {"state": state, "now": time.time(), "reason": reason, "job_id": job_id},
        )

    async def set_job_priority(self, job_id: int, priority: int) -> None:
        await self._write(Q["set_job_priority"], (priority, time.time(), job_id))

    async def set_job_rate(self, job_id: int, rate: float) -> None:
        await self._write(Q["set_job_rate"], (rate, job_id))

    async def delete_job(self, job_id: int) -> None:
        """Remove a job and everything of it (used when a submission is refused)."""
        async with self.transaction():
            for name in ("delete_job_items", "delete_job", "delete_job_counts",
                         "delete_job_error_counts", "delete_job_discoveries",
                         "delete_job_paused_accounts", "delete_job_samples"):
                await self.db.execute(Q[name], (job_id,))

    async def reap_abandoned_submissions(self) -> list[int]:
        """Delete jobs left in `preparing` by a submitting process that died on this host."""
        host = socket.gethostname()
        removed = []
        for row in await self._all(Q["stale_preparing"]):
            owner = row["owner"] or ""
            parts = owner.split(":")
            if len(parts) >= 2 and parts[0] == host and not _pid_alive(int(parts[1])):
                await self.delete_job(row["id"])
                removed.append(int(row["id"]))
        return removed

    # -- items -----------------------------------------------------------------------------

    async def _shard_id(self, shard: Shard) -> int:
        sid = self._shard_ids.get(shard)
        if sid is None:
            cur = await self.db.execute(
                Q["upsert_shard"], (shard.partition, shard.account, shard.region)
            )
            row = await cur.fetchone()
            assert row is not None  # RETURNING of an upsert always yields the row
            sid = int(row[0])
            await cur.close()
            self._shard_ids[shard] = sid
            self._shards_by_id[sid] = shard
        return sid

    async def _tagset_id(self, body: str) -> int:
        tid = self._tagset_ids.get(body)
        if tid is None:
            digest = hashlib.sha256(body.encode()).hexdigest()
            cur = await self.db.execute(Q["upsert_tagset"], (digest, body))
            row = await cur.fetchone()
            assert row is not None
            tid = int(row[0])
            await cur.close()
            if len(self._tagset_ids) >= TAGSET_CACHE:
                # Per-row tags can make millions of tagsets: memory stays flat, not the cache.
                self._tagset_ids.clear()
                self._tagsets_by_id.clear()
            self._tagset_ids[body] = tid
            self._tagsets_by_id[tid] = body
        return tid

    async def add_items(self, job_id: int, items: Sequence[NewItem]) -> int:
        """Insert items in one transaction; an ARN already in the job is ignored. Returns added."""
        now = time.time()
        try:
            return await self._add_items(job_id, items, now)
        except BaseException:
            # Ids cached during a rolled-back transaction may not exist: forget them all.
            self._shard_ids.clear()
            self._shards_by_id.clear()
            self._tagset_ids.clear()
            self._tagsets_by_id.clear()
            raise

    async def _add_items(self, job_id: int, items: Sequence[NewItem], now: float) -> int:
        """Valid items go in as runs of consecutive items of one shard and tagset, each run one
        INSERT … SELECT over a JSON array (one bound parameter, not ten per row), so item ids
        keep the input order. Counters are then added up from the rows this transaction
        inserted (ids above the previous maximum; duplicates inserted nothing), one statement
        each instead of a trigger firing per row."""
        async with self.transaction():
            if self._count_trigger is None:
                cur = await self.db.execute(Q["has_count_trigger"])
                self._count_trigger = await cur.fetchone() is not None  # a store made before
                await cur.close()
            cur = await self.db.execute(Q["max_item_id"])
            row = await cur.fetchone()
            last_id = (row[0] if row else 0) or 0
            await cur.close()
            runs = _runs(items)
            if len(runs) > _MAX_RUNS:  # rows of many shards interleaved: one statement
                rows: list[tuple[Any, ...]] = []
                for it in items:
                    if it.problem is not None or it.shard is None or it.tagset is None:
                        rows.append((job_id, it.arn, 0, 0, "invalid", it.line, "InvalidInput",
                                     None, it.problem, now, it.route))
                    else:
                        rows.append((job_id, it.arn, await self._shard_id(it.shard),
                                     await self._tagset_id(it.tagset), "pending", it.line,
                                     None, None, None, None, it.route))
                cur = await self.db.executemany(Q["insert_item"], rows)
                added = cur.rowcount
                await cur.close()
            else:
                added = 0
                for shard, body, run in runs:
                    added += await self._insert_run(job_id, shard, body, run, now)
            if added and not self._count_trigger:
                await self.db.execute(Q["add_counts"], (job_id, last_id))
                await self.db.execute(Q["add_error_counts"], (job_id, last_id))
        return int(added)

    async def _insert_run(
        self, job_id: int, shard: Shard | None, body: str | None, run: list[NewItem],
        now: float,
    ) -> int:
        if shard is None or body is None:
            rows = [(job_id, it.arn, 0, 0, "invalid", it.line, "InvalidInput", None, it.problem,
                     now, it.route) for it in run]
            cur = await self.db.executemany(Q["insert_item"], rows)
        else:
            sid = await self._shard_id(shard)
            tid = await self._tagset_id(body)
            lines = [it.line for it in run]
            first = lines[0]
            if first is not None and lines == list(range(first, first + len(lines))):
                arns = json.dumps([it.arn for it in run], ensure_ascii=False)
                cur = await self.db.execute(Q["insert_run"],
                                            (job_id, sid, tid, first, run[0].route, arns))
            else:
                pairs = json.dumps([(it.arn, it.line) for it in run], ensure_ascii=False)
                cur = await self.db.execute(Q["insert_run_lines"],
                                            (job_id, sid, tid, run[0].route, pairs))
        n = cur.rowcount
        await cur.close()
        return int(n)

    async def shard(self, shard_id: int) -> Shard:
        if shard_id not in self._shards_by_id:
            for row in await self._all(Q["all_shards"]):
                s = Shard(row["partition"], row["account"], row["region"])
                self._shards_by_id[row["id"]] = s
                self._shard_ids[s] = row["id"]
        return self._shards_by_id[shard_id]

    async def tagset(self, tagset_id: int) -> str:
        body = self._tagsets_by_id.get(tagset_id)
        if body is None:
            row = await self._one(Q["get_tagset"], (tagset_id,))
            if row is None:
                raise StoreError(f"tagset {tagset_id} is missing from {self.location}")
            body = str(row[0])
            if len(self._tagsets_by_id) >= TAGSET_CACHE:
                self._tagsets_by_id.clear()
            self._tagsets_by_id[tagset_id] = body
        return body

    # -- counts ----------------------------------------------------------------------------

    async def counts(self, job_id: int) -> Counts:
        rows = await self._all(Q["counts"], (job_id,))
        return Counts({r[0]: int(r[1]) for r in rows if r[1]})

    async def shard_counts(self, job_id: int) -> dict[Shard | None, Counts]:
        out: dict[Shard | None, Counts] = {}
        for row in await self._all(Q["shard_counts"], (job_id,)):
            shard = await self.shard(row[0]) if row[0] else None
            out.setdefault(shard, Counts()).by_state[row[1]] = int(row[2])
        return out

    async def route_counts(self, job_id: int) -> dict[tuple[Shard | None, str], Counts]:
        out: dict[tuple[Shard | None, str], Counts] = {}
        for row in await self._all(Q["route_counts"], (job_id,)):
            shard = await self.shard(row[0]) if row[0] else None
            out.setdefault((shard, row[1]), Counts()).by_state[row[2]] = int(row[3])
        return out

    async def error_counts(self, job_id: int, limit: int = 5) -> list[tuple[str, int]]:
        return [(r[0], int(r[1])) for r in await self._all(Q["error_counts"], (job_id, limit))]

    async def error_example(self, job_id: int, code: str) -> tuple[str, int | None, str] | None:
        row = await self._one(Q["error_example"], (job_id, code))
        return (row[0], row[1], row[2]) if row else None

    # -- work ------------------------------------------------------------------------------

    async def runnable(self) -> list[Runnable]:
        return [
            Runnable(r["job_id"], r["shard_id"], r["priority"], r["operation"],
                     JobState(r["state"]), r["route"])
            for r in await self._all(Q["runnable"])
        ]

    async def finished_jobs(self) -> list[int]:
        """Jobs in ready/active whose items are all terminal."""
        return [int(r[0]) for r in await self._all(Q["unfinished_jobs"])]

    async def claim(
        self, owner: str, job_id: int, shard_id: int, limit: int, *, lease_seconds: float,
        now: float | None = None, route: str | None = None,
    ) -> list[Claimed]:
        now = time.time() if now is None else now
        rows = await self._all(
            Q["claim" if route is None else "claim_route"],
            {"owner": owner, "expires": now + lease_seconds, "job_id": job_id,
             "shard_id": shard_id, "now": now, "limit": limit, "route": route},
        )
        return [Claimed(r[0], r[1], r[2], r[3], before=r[4]) for r in rows]

    async def next_due(self, job_id: int, shard_id: int,
                       route: str | None = None) -> float | None:
        if route is None:
            row = await self._one(Q["next_due"], (job_id, shard_id))
        else:
            row = await self._one(Q["next_due_route"], (job_id, shard_id, route))
        return float(row[0]) if row and row[0] is not None else None

    async def set_route(self, job_id: int, route: str) -> int:
        return await self._write(Q["set_route"], (route, job_id, route))

    async def record(self, owner: str, outcomes: Sequence[Outcome]) -> int:
        if not outcomes:
            return 0
        now = time.time()
        rows = [
            (o.state, o.attempts, o.next_attempt_at, o.error_code, o.http_status, o.message,
             now if o.state in TERMINAL else None, o.item_id, owner)
            for o in outcomes
        ]
        async with self.transaction():
            cur = await self.db.executemany(Q["record"], rows)
            n = cur.rowcount
            await cur.close()
        return int(n)

    async def keep_before(self, owner: str, befores: Sequence[tuple[int, str]]) -> int:
        if not befores:
            return 0
        async with self.transaction():
            cur = await self.db.executemany(
                Q["keep_before"], [(before, item_id, owner) for item_id, before in befores])
            n = cur.rowcount
            await cur.close()
        return int(n)

    async def changed_items(self, job_id: int, after_id: int, limit: int) -> list[ChangedItem]:
        return [ChangedItem(r[0], r[1], Shard(r[2], r[3], r[4]), r[5], r[6])
                for r in await self._all(Q["changed_page"], (job_id, after_id, limit))]

    async def register_owner(self, owner: str) -> None:
        host, pid = owner_host_pid(owner)
        now = time.time()
        await self._write(Q["register_owner"], (owner, host, pid, now, now))

    async def heartbeat(self, owner: str) -> None:
        await self._write(Q["heartbeat"], (time.time(), owner))

    async def release_owner(self, owner: str, *, forget: bool = True) -> int:
        """Return an owner's leased items to pending (attempts untouched)."""
        async with self.transaction():
            cur = await self.db.execute(Q["release_owner"], (owner,))
            n = cur.rowcount
            await self.db.execute(Q["release_discoveries"], (owner,))
            await self.db.execute(Q["release_shards"], (owner,))
            if forget:
                await self.db.execute(Q["delete_owner"], (owner,))
        return int(n)

    async def reap_dead_owners(self, *, stale_seconds: float, me: str | None = None) -> int:
        host = socket.gethostname()
        now = time.time()
        released = 0
        for row in await self._all(Q["all_owners"]):
            if row["owner"] == me:
                continue
            dead = (row["host"] == host and not _pid_alive(row["pid"])) or (
                row["heartbeat_at"] < now - stale_seconds
            )
            if dead:
                released += await self.release_owner(row["owner"])
        released += await self._write(Q["release_expired"], (now,))
        return released

    async def retry_failed(self, job_id: int, code: str | None = None) -> int:
        if code is None:
            return await self._write(Q["retry_failed"], (job_id,))
        return await self._write(Q["retry_failed_code"], (job_id, code))

    async def cancel_items(self, job_id: int, message: str, *, code: str = "Cancelled") -> int:
        """End a job's open items as `cancelled` with a code and message saying why."""
        return await self._write(Q["cancel_items"], (time.time(), code, message, job_id))

    async def last_failures(self, job_id: int, limit: int = 20) -> list[ReportRow]:
        return [ReportRow(*r) for r in await self._all(Q["last_failures"], (job_id, limit))]

    async def record_sample(self, job_id: int, at: float, done_total: int, *,
                            min_gap: float = 0.0) -> bool:
        return await self._write(Q["record_sample"], {
            "job_id": job_id, "at": at, "done": done_total, "min_gap": min_gap}) > 0

    async def samples(self, job_id: int, since: float = 0.0) -> list[tuple[float, int]]:
        return [(float(r[0]), int(r[1])) for r in await self._all(Q["samples"], (job_id, since))]

    async def report_rows(
        self, job_id: int, *, unsuccessful_only: bool = False, page: int = 5000
    ) -> AsyncIterator[ReportRow]:
        query = Q["report_page_unsuccessful" if unsuccessful_only else "report_page"]
        last = 0
        while True:
            rows = await self._all(query, (job_id, last, page))
            for row in rows:
                yield ReportRow(*row)
            if len(rows) < page:
                return
            last = rows[-1]["id"]

    async def succeeded_items(self, job_id: int,
                              page: int = 1000) -> AsyncIterator[list[SucceededItem]]:
        last = 0
        while True:
            rows = await self._all(Q["succeeded_page"], (job_id, last, page))
            if rows:
                yield [SucceededItem(*r) for r in rows]
            if len(rows) < page:
                return
            last = rows[-1]["id"]

    async def set_drift(self, results: Sequence[tuple[int, str | None]]) -> None:
        now = time.time()
        async with self.transaction():
            await self.db.executemany(
                Q["set_drift"], [(now, drift, item_id) for item_id, drift in results]
            )

    async def skip_items(self, job_id: int, skipped: Sequence[tuple[str, str]]) -> int:
        if not skipped:
            return 0
        now = time.time()
        async with self.transaction():
            cur = await self.db.executemany(
                Q["skip_arn"], [(now, reason, job_id, arn) for arn, reason in skipped]
            )
            n = cur.rowcount
            await cur.close()
        return int(n)

    async def merge_job_options(self, job_id: int, patch: dict[str, Any]) -> None:
        # Read, merge, write in one transaction: top-level keys are replaced whole (SQLite's
        # json_patch would merge nested objects, which the contract does not want).
        async with self.transaction():
            cur = await self.db.execute(Q["get_job"], (job_id,))
            row = await cur.fetchone()
            await cur.close()
            if row is None:
                return
            merged = JobOptions.from_json(row["options"]).merged(patch)
            await self.db.execute(Q["set_job_options"], (merged.to_json(), time.time(), job_id))

    # -- workers and shard leases ----------------------------------------------------------

    async def workers(self) -> list[Worker]:
        return [Worker(r[0], r[1], int(r[2]), float(r[3]), float(r[4]))
                for r in await self._all(Q["workers"])]

    async def acquire_shards(self, owner: str, wanted: Iterable[int], *,
                             lease_seconds: float) -> set[int]:
        now = time.time()
        held: set[int] = set()
        async with self.transaction():
            for shard_id in wanted:
                cur = await self.db.execute(Q["acquire_shard"], {
                    "shard_id": shard_id, "owner": owner, "expires": now + lease_seconds,
                    "now": now})
                if await cur.fetchone() is not None:
                    held.add(shard_id)
                await cur.close()
        return held

    async def release_shards(self, owner: str, shard_ids: Iterable[int] | None = None) -> None:
        if shard_ids is None:
            await self._write(Q["release_shards"], (owner,))
            return
        async with self.transaction():
            await self.db.executemany(Q["release_shard"], [(owner, s) for s in shard_ids])

    async def shard_holders(self) -> dict[int, tuple[str, float]]:
        return {int(r[0]): (str(r[1]), float(r[2]))
                for r in await self._all(Q["shard_holders"], (time.time(),))}

    # -- discovery -------------------------------------------------------------------------

    async def create_discoveries(self, job_id: int,
                                 pairs: Iterable[tuple[str, str, str]]) -> None:
        now = time.time()
        async with self.transaction():
            await self.db.executemany(
                Q["create_discovery"], [(job_id, p, a, r, now) for p, a, r in pairs]
            )

    async def claim_discovery(self, owner: str, job_ids: set[int] | None) -> Discovery | None:
        row = await self._one(
            Q["claim_discovery"],
            {"owner": owner, "now": time.time(),
             "jobs": None if job_ids is None else json.dumps(sorted(job_ids))},
        )
        return _discovery(row) if row else None

    async def save_discovery_page(self, d: Discovery, owner: str, token: str | None,
                                  found: int) -> None:
        now = time.time()
        await self._write(Q["save_discovery_page"], (token, now, found, now, d.id, owner))

    async def restart_discovery(self, d: Discovery) -> None:
        await self._write(Q["restart_discovery"], (time.time(), d.id))

    async def finish_discovery(self, d: Discovery, state: str,
                               error: str | None = None) -> None:
        await self._write(Q["finish_discovery"], (state, error, time.time(), d.id))

    async def job_discoveries(self, job_id: int) -> list[Discovery]:
        return [_discovery(r) for r in await self._all(Q["job_discoveries"], (job_id,))]

    # -- paused accounts -------------------------------------------------------------------

    async def pause_account(self, job_id: int, account: str, reason: str) -> bool:
        return await self._write(Q["pause_account"],
                                 (job_id, account, reason, time.time())) > 0

    async def paused_accounts(self, job_id: int) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in await self._all(Q["paused_accounts"], (job_id,))]

    async def clear_paused_accounts(self, job_id: int) -> int:
        return await self._write(Q["clear_paused_accounts"], (job_id,))

    # -- tag-sync rules --------------------------------------------------------------------

    async def add_sync_rule(self, rule: NewSyncRule) -> SyncRule:
        try:
            await self._one(Q["sync_insert_rule"], {
                "name": rule.name, "tag_key": rule.tag_key, "tag_value": rule.tag_value,
                "resource_query": rule.resource_query,
                "apply_tags": json.dumps(rule.apply, sort_keys=True, ensure_ascii=False),
                "regions": json.dumps(list(rule.regions)),
                "accounts": json.dumps(list(rule.accounts) or [""]),
                "interval": rule.interval, "now": time.time()})
        except sqlite3.IntegrityError:
            raise KeyError(rule.name) from None
        added = await self.get_sync_rule(rule.name)
        assert added is not None
        return added

    async def get_sync_rule(self, name: str) -> SyncRule | None:
        row = await self._one(Q["sync_get_rule"], (name,))
        return _sync_rule(row) if row else None

    async def list_sync_rules(self) -> list[SyncRule]:
        return [_sync_rule(r) for r in await self._all(Q["sync_list_rules"])]

    async def remove_sync_rule(self, rule: SyncRule) -> None:
        async with self.transaction():
            await self.db.execute(Q["sync_delete_members"], (rule.id,))
            await self.db.execute(Q["sync_delete_rule"], (rule.id,))

    async def due_sync_rules(self, now: float) -> list[str]:
        return [r[0] for r in await self._all(Q["sync_due_rules"], (now,))]

    async def claim_sync_rule(self, name: str, *, force: bool = False) -> SyncRule | None:
        row = await self._one(Q["sync_claim_now" if force else "sync_claim_due"],
                              {"name": name, "now": time.time()})
        return _sync_rule(row) if row else None

    async def sync_member_arns(self, rule_id: int) -> list[str]:
        out: list[str] = []
        last, page = "", 5000
        while True:
            rows = await self._all(Q["sync_members_page"], (rule_id, last, page))
            out.extend(r[0] for r in rows)
            if len(rows) < page:
                return out
            last = rows[-1][0]

    async def update_sync_members(self, rule: SyncRule, seen: Sequence[str],
                                  gone: Sequence[str]) -> None:
        body = tagset_body(rule.apply, None)
        digest = hashlib.sha256(body.encode()).hexdigest()
        now = time.time()
        for i in range(0, max(len(seen), len(gone)), SYNC_CHUNK):
            async with self.transaction():
                await self.db.executemany(
                    Q["sync_upsert_member"],
                    [(rule.id, arn, body, digest, now) for arn in seen[i:i + SYNC_CHUNK]])
                await self.db.executemany(
                    Q["sync_delete_member"],
                    [(rule.id, arn) for arn in gone[i:i + SYNC_CHUNK]])

    async def finish_sync_rule(self, rule: SyncRule, status: str, error: str | None,
                               added: int, removed: int, jobs: Sequence[int]) -> None:
        await self._write(Q["sync_finish_rule"], {
            "status": status, "error": error, "now": time.time(), "id": rule.id,
            "added": added, "removed": removed, "jobs": json.dumps(list(jobs))})

    # -- metrics ---------------------------------------------------------------------------

    async def totals(self) -> QueueTotals:
        items = {r[0]: int(r[1] or 0) for r in await self._all(Q["metrics_items_by_state"])}
        job_items = [(int(r[0]), r[1], str(r[2]), str(r[4]), int(r[5]))
                     for r in await self._all(Q["metrics_active_job_items"]) if r[5]]
        jobs = {r[0]: int(r[1]) for r in await self._all(Q["metrics_jobs_by_state"])}
        rules = {r[0]: int(r[1]) for r in await self._all(Q["sync_rule_status_counts"])}
        return QueueTotals(items, job_items, jobs, rules)

    # -- moving a store --------------------------------------------------------------------

    async def lease_holders(self) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in await self._all(Q["lease_holders"])}

    async def import_job(self, job: Job) -> None:
        try:
            await self._write(Q["import_job"], {
                "id": job.id, "name": job.name, "operation": job.operation,
                "state": str(job.state), "priority": job.priority,
                "options": job.options.to_json(), "created_at": job.created_at,
                "started_at": job.started_at, "finished_at": job.finished_at,
                "updated_at": job.updated_at, "rate": job.rate, "reason": job.reason})
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"cannot import job {job.id} into {self.location}: {exc}") from None

    async def export_items(self, after_id: int, limit: int,
                           job_id: int | None = None) -> list[ItemRecord]:
        if job_id is None:
            rows = await self._all(Q["export_items"], (after_id, limit))
        else:
            rows = await self._all(Q["export_job_items"], (job_id, after_id, limit))
        return [_item_record(r) for r in rows]

    async def import_items(self, records: Sequence[ItemRecord]) -> int:
        if not records:
            return 0
        try:
            return await self._import_items(records)
        except BaseException as exc:
            self._shard_ids.clear()
            self._shards_by_id.clear()
            self._tagset_ids.clear()
            self._tagsets_by_id.clear()
            if isinstance(exc, sqlite3.IntegrityError):
                raise StoreError(f"cannot import items {records[0].id}..{records[-1].id} into "
                                 f"{self.location}: {exc}") from None
            raise

    async def _import_items(self, records: Sequence[ItemRecord]) -> int:
        """One executemany; counters added up here from the records (an id conflict aborts
        the whole page, so every record counted was inserted)."""
        counts: Counter[tuple[int, int, str, str]] = Counter()
        errors: Counter[tuple[int, str]] = Counter()
        async with self.transaction():
            if self._count_trigger is None:
                cur = await self.db.execute(Q["has_count_trigger"])
                self._count_trigger = await cur.fetchone() is not None
                await cur.close()
            rows = []
            for r in records:
                sid = await self._shard_id(r.shard) if r.shard is not None else 0
                tid = await self._tagset_id(r.tagset) if r.tagset is not None else 0
                rows.append((r.id, r.job_id, r.arn, sid, tid, str(r.state), r.attempts,
                             r.next_attempt_at, r.lease_owner, r.lease_expires_at, r.error_code,
                             r.http_status, r.message, r.finished_at, r.line, r.verified_at,
                             r.drift, r.before, r.route))
                counts[(r.job_id, sid, r.route, str(r.state))] += 1
                if r.state in (ItemState.FAILED, ItemState.INVALID):
                    errors[(r.job_id, r.error_code or "Unknown")] += 1
            cur = await self.db.executemany(Q["import_item"], rows)
            await cur.close()
            if not self._count_trigger:
                await self.db.executemany(Q["import_counts"],
                                          [(*k, n) for k, n in sorted(counts.items())])
                await self.db.executemany(Q["import_error_counts"],
                                          [(*k, n) for k, n in sorted(errors.items())])
        return len(rows)

    async def import_discoveries(self, records: Sequence[Discovery]) -> None:
        async with self.transaction():
            await self.db.executemany(Q["import_discovery"], [
                (d.id, d.job_id, d.partition, d.account, d.region, d.state, d.token, d.token_at,
                 d.pages, d.found, d.restarts, d.error, d.updated_at) for d in records])

    async def export_paused_accounts(self, job_id: int) -> list[PausedAccount]:
        return [PausedAccount(r[0], r[1], float(r[2]))
                for r in await self._all(Q["paused_accounts"], (job_id,))]

    async def import_paused_accounts(self, job_id: int,
                                     accounts: Sequence[PausedAccount]) -> None:
        async with self.transaction():
            await self.db.executemany(Q["import_paused_account"], [
                (job_id, a.account, a.reason, a.paused_at) for a in accounts])

    async def import_sync_rule(self, rule: SyncRule) -> None:
        try:
            await self._write(Q["import_sync_rule"], (
                rule.id, rule.name, rule.tag_key, rule.tag_value, rule.resource_query,
                json.dumps(rule.apply, sort_keys=True, ensure_ascii=False),
                json.dumps(rule.regions), json.dumps(rule.accounts), rule.interval_seconds,
                rule.status, rule.error, rule.created_at, rule.last_run_at, rule.next_run_at,
                rule.members, rule.last_added, rule.last_removed, json.dumps(rule.last_jobs)))
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"cannot import sync rule {rule.name!r} into {self.location}: "
                             f"{exc}") from None

    async def export_sync_members(self, rule_id: int, after_arn: str,
                                  limit: int) -> list[SyncMember]:
        return [SyncMember(r[0], r[1], r[2], float(r[3]))
                for r in await self._all(Q["export_sync_members"], (rule_id, after_arn, limit))]

    async def import_sync_members(self, rule_id: int, members: Sequence[SyncMember]) -> None:
        async with self.transaction():
            await self.db.executemany(Q["import_sync_member"], [
                (rule_id, m.arn, m.applied, m.digest, m.last_seen_at) for m in members])

    async def finish_import(self) -> None:
        """Nothing to move: an INTEGER PRIMARY KEY takes max(id) + 1."""


def _item_record(row: Any) -> ItemRecord:
    shard = Shard(row[3], row[4], row[5]) if row[3] is not None else None
    return ItemRecord(
        id=int(row[0]), job_id=int(row[1]), arn=row[2], shard=shard, tagset=row[6],
        state=ItemState(row[7]), attempts=int(row[8]), next_attempt_at=float(row[9]),
        lease_owner=row[10], lease_expires_at=row[11], error_code=row[12],
        http_status=row[13], message=row[14], finished_at=row[15], line=row[16],
        verified_at=row[17], drift=row[18], before=row[19], route=row[20])


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"], name=row["name"], operation=row["operation"],
        state=JobState(row["state"]), priority=row["priority"],
        options=JobOptions.from_json(row["options"]), created_at=row["created_at"],
        started_at=row["started_at"], finished_at=row["finished_at"],
        updated_at=row["updated_at"], rate=row["rate"], reason=row["reason"],
    )


def _discovery(row: sqlite3.Row) -> Discovery:
    return Discovery(row["id"], row["job_id"], row["partition"], row["account"], row["region"],
                     row["state"], row["token"], row["token_at"], row["pages"], row["found"],
                     row["restarts"], row["error"], row["updated_at"])


def _sync_rule(row: sqlite3.Row) -> SyncRule:
    return SyncRule(row["id"], row["name"], row["tag_key"], row["tag_value"],
                    row["resource_query"], json.loads(row["apply_tags"]),
                    json.loads(row["regions"]), json.loads(row["accounts"]),
                    row["interval_seconds"], row["status"], row["error"], row["created_at"],
                    row["last_run_at"], row["next_run_at"], row["members"], row["last_added"],
                    row["last_removed"], json.loads(row["last_jobs"]))
