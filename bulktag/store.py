"""The durable queue: jobs, items, tagsets and shards in one SQLite file.

All SQL lives in `sql/queries.sql` and the numbered files of `migrations/`; this module is the
narrow interface the engine and the CLI use (create a job, add items in bulk, claim a batch for
a shard with a lease, record outcomes, release leases of dead processes, counts). One aiosqlite
connection per Store; a lock keeps one coroutine's transaction from interleaving with another's.
WAL mode with synchronous=NORMAL: a process killed at any point leaves the file consistent, and
other processes read while one writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from .arn import Shard

TAGSET_CACHE = 50_000  # tagsets kept in memory per Store before the cache starts over
TERMINAL = ("succeeded", "skipped", "failed", "invalid", "cancelled")
ITEM_STATES = ("pending", "leased", *TERMINAL)
JOB_DONE = ("completed", "failed", "cancelled")

_HERE = Path(__file__).resolve().parent


class StoreError(Exception):
    """The store file cannot be opened or migrated (bad path, not a database, locked)."""


def _migrations_dir() -> Path:
    # Inside a wheel the migrations sit in the package; in a source checkout, beside it.
    for candidate in (_HERE / "migrations", _HERE.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError("bulktag's migrations/ folder is missing from this installation")


def _load_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in (_HERE / "sql" / "queries.sql").read_text().splitlines():
        if line.startswith("-- name: "):
            if name:
                queries[name] = "\n".join(lines).strip()
            name, lines = line.removeprefix("-- name: ").strip(), []
        elif name and not line.startswith("--"):
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip()
    return queries


Q = _load_queries()


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


def tagset_body(tags: dict[str, str] | None, keys: Sequence[str] | None) -> str:
    """Canonical JSON of a tag map (tag jobs) or key list (untag jobs), the tagset identity."""
    if tags is not None:
        return json.dumps(tags, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(sorted(set(keys or ())), separators=(",", ":"), ensure_ascii=False)


# -- bulk insert of items (add_items) ---------------------------------------------------------

_MAX_RUNS = 64  # runs of one shard and tagset per add_items call before one plain executemany
_RUN_SIZE = 50_000  # items per INSERT … SELECT at most (bounds the JSON text)
_HAS_COUNT_TRIGGER = (
    "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'items_count_insert'"
)
_MAX_ITEM_ID = "SELECT max(id) FROM items"
_INSERT_RUN = """INSERT INTO items (job_id, arn, shard_id, tagset_id, state, line)
SELECT ?, value, ?, ?, 'pending', ? + key FROM json_each(?) WHERE true
ON CONFLICT (job_id, arn) DO NOTHING"""
# Lines not consecutive: an array of [arn, line] pairs.
_INSERT_RUN_LINES = """INSERT INTO items (job_id, arn, shard_id, tagset_id, state, line)
SELECT ?, json_extract(value, '$[0]'), ?, ?, 'pending', json_extract(value, '$[1]')
FROM json_each(?) WHERE true
ON CONFLICT (job_id, arn) DO NOTHING"""
# Both read only the rows just inserted: `+` keeps the planner on the rowid range (id > ?2)
# instead of an index on job_id, which would scan the whole job every chunk.
_ADD_COUNTS = """INSERT INTO counts (job_id, shard_id, state, n)
SELECT job_id, shard_id, state, count(*) FROM items WHERE id > ?2 AND +job_id = ?1
GROUP BY shard_id, state
ON CONFLICT (job_id, shard_id, state) DO UPDATE SET n = n + excluded.n"""
_ADD_ERROR_COUNTS = """INSERT INTO error_counts (job_id, error_code, n)
SELECT job_id, coalesce(error_code, 'Unknown'), count(*) FROM items
WHERE id > ?2 AND +job_id = ?1 AND +state IN ('failed', 'invalid')
GROUP BY coalesce(error_code, 'Unknown')
ON CONFLICT (job_id, error_code) DO UPDATE SET n = n + excluded.n"""


def _runs(items: Sequence[NewItem]) -> list[tuple[Shard | None, str | None, list[NewItem]]]:
    """Maximal runs of consecutive items with the same shard and tagset (invalid items: None,
    None), in input order, each at most _RUN_SIZE long."""
    runs: list[tuple[Shard | None, str | None, list[NewItem]]] = []
    cur_shard: Shard | None = None
    cur_body: str | None = None
    run: list[NewItem] = []
    for it in items:
        if it.problem is not None or it.shard is None or it.tagset is None:
            shard, body = None, None
        else:
            shard, body = it.shard, it.tagset
        if run and len(run) < _RUN_SIZE and body == cur_body and (
            shard is cur_shard or shard == cur_shard
        ):
            run.append(it)
            continue
        run = [it]
        runs.append((shard, body, run))
        cur_shard, cur_body = shard, body
    return runs


@dataclass(slots=True)
class Job:
    id: int
    name: str | None
    operation: str
    state: str
    priority: int
    options: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    rate: float
    reason: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            id=row["id"],
            name=row["name"],
            operation=row["operation"],
            state=row["state"],
            priority=row["priority"],
            options=json.loads(row["options"]),
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            updated_at=row["updated_at"],
            rate=row["rate"],
            reason=row["reason"],
        )


@dataclass(slots=True)
class NewItem:
    """An item to add: a valid one has a shard and a tagset body; an invalid one a reason."""

    arn: str
    shard: Shard | None
    tagset: str | None  # canonical body from tagset_body()
    line: int | None = None
    problem: str | None = None


@dataclass(slots=True)
class Claimed:
    id: int
    arn: str
    tagset_id: int
    attempts: int
    override: dict[str, str] | None = None  # tags to send instead of the tagset (--if-absent)


@dataclass(slots=True)
class Outcome:
    """A leased item's new state, written by record()."""

    item_id: int
    state: str  # pending (retry or requeue) or a terminal state
    attempts: int
    next_attempt_at: float = 0.0
    error_code: str | None = None
    http_status: int | None = None
    message: str | None = None


@dataclass(slots=True)
class Runnable:
    job_id: int
    shard_id: int
    priority: int
    operation: str
    state: str = "active"


@dataclass
class Counts:
    by_state: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, state: str) -> int:
        return self.by_state.get(state, 0)

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    @property
    def open(self) -> int:
        return self["pending"] + self["leased"]

    @property
    def done(self) -> int:
        return self.total - self.open


def new_owner_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self.db = db
        self.path = path
        self._lock = asyncio.Lock()
        self._shard_ids: dict[Shard, int] = {}
        self._shards_by_id: dict[int, Shard] = {}
        self._tagset_ids: dict[str, int] = {}
        self._tagsets_by_id: dict[int, str] = {}
        self._count_trigger: bool | None = None  # items_count_insert exists (older stores)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Store:
        """Open (creating if needed) the store at path and apply pending migrations."""
        path = str(path)
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        db.row_factory = sqlite3.Row
        try:
            await db.execute("PRAGMA busy_timeout = 60000")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            # 64 MiB of page cache (the default is 2 MiB): a bulk enqueue keeps the UNIQUE and
            # pending indexes' hot pages in memory instead of re-reading them from the WAL.
            await db.execute("PRAGMA cache_size = -65536")
            store = cls(db, path)
            await store._migrate()
        except BaseException as exc:
            await db.close()
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise StoreError(f"cannot open the store {path}: {exc}") from exc
            raise
        return store

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _migrate(self) -> None:
        await self.db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        for path in sorted(_migrations_dir().glob("*.sql")):
            version = int(path.name.split("_", 1)[0])
            async with self.transaction():
                cur = await self.db.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                )
                if await cur.fetchone():
                    continue
                for statement in _statements(path.read_text()):
                    await self.db.execute(statement)
                await self.db.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (version, path.name, time.time()),
                )

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
        options: dict[str, Any],
        name: str | None = None,
        priority: int = 0,
        owner: str | None = None,
    ) -> int:
        """A new job in state `preparing`: invisible to runners until mark_ready()."""
        row = await self._one(
            Q["create_job"],
            {
                "name": name,
                "operation": operation,
                "priority": priority,
                "options": json.dumps(options),
                "owner": owner,
                "now": time.time(),
            },
        )
        return int(row[0])

    async def get_job(self, job_id: int) -> Job | None:
        row = await self._one(Q["get_job"], (job_id,))
        return Job.from_row(row) if row else None

    async def list_jobs(self) -> list[Job]:
        return [Job.from_row(r) for r in await self._all(Q["list_jobs"])]

    async def set_job_state(self, job_id: int, state: str, reason: str | None = None) -> None:
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
                         "delete_job_error_counts"):
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
            sid = int((await cur.fetchone())[0])
            await cur.close()
            self._shard_ids[shard] = sid
            self._shards_by_id[sid] = shard
        return sid

    async def _tagset_id(self, body: str) -> int:
        tid = self._tagset_ids.get(body)
        if tid is None:
            digest = hashlib.sha256(body.encode()).hexdigest()
            cur = await self.db.execute(Q["upsert_tagset"], (digest, body))
            tid = int((await cur.fetchone())[0])
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
                cur = await self.db.execute(_HAS_COUNT_TRIGGER)
                self._count_trigger = await cur.fetchone() is not None  # a store made before
                await cur.close()
            cur = await self.db.execute(_MAX_ITEM_ID)
            last_id = (await cur.fetchone())[0] or 0
            await cur.close()
            runs = _runs(items)
            if len(runs) > _MAX_RUNS:  # rows of many shards interleaved: one statement
                rows = []
                for it in items:
                    if it.problem is not None or it.shard is None or it.tagset is None:
                        rows.append((job_id, it.arn, 0, 0, "invalid", it.line, "InvalidInput",
                                     None, it.problem, now))
                    else:
                        rows.append((job_id, it.arn, await self._shard_id(it.shard),
                                     await self._tagset_id(it.tagset), "pending", it.line,
                                     None, None, None, None))
                cur = await self.db.executemany(Q["insert_item"], rows)
                added = cur.rowcount
                await cur.close()
            else:
                added = 0
                for shard, body, run in runs:
                    added += await self._insert_run(job_id, shard, body, run, now)
            if added and not self._count_trigger:
                await self.db.execute(_ADD_COUNTS, (job_id, last_id))
                await self.db.execute(_ADD_ERROR_COUNTS, (job_id, last_id))
        return int(added)

    async def _insert_run(
        self, job_id: int, shard: Shard | None, body: str | None, run: list[NewItem],
        now: float,
    ) -> int:
        if shard is None or body is None:
            rows = [(job_id, it.arn, 0, 0, "invalid", it.line, "InvalidInput", None, it.problem,
                     now) for it in run]
            cur = await self.db.executemany(Q["insert_item"], rows)
        else:
            sid = await self._shard_id(shard)
            tid = await self._tagset_id(body)
            lines = [it.line for it in run]
            first = lines[0]
            if first is not None and lines == list(range(first, first + len(lines))):
                arns = json.dumps([it.arn for it in run], ensure_ascii=False)
                cur = await self.db.execute(_INSERT_RUN, (job_id, sid, tid, first, arns))
            else:
                pairs = json.dumps([(it.arn, it.line) for it in run], ensure_ascii=False)
                cur = await self.db.execute(_INSERT_RUN_LINES, (job_id, sid, tid, pairs))
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

    async def error_counts(self, job_id: int, limit: int = 5) -> list[tuple[str, int]]:
        return [(r[0], int(r[1])) for r in await self._all(Q["error_counts"], (job_id, limit))]

    async def error_example(self, job_id: int, code: str) -> tuple[str, int | None, str] | None:
        row = await self._one(Q["error_example"], (job_id, code))
        return (row[0], row[1], row[2]) if row else None

    # -- work ------------------------------------------------------------------------------

    async def runnable(self) -> list[Runnable]:
        return [
            Runnable(r["job_id"], r["shard_id"], r["priority"], r["operation"], r["state"])
            for r in await self._all(Q["runnable"])
        ]

    async def finished_jobs(self) -> list[int]:
        """Jobs in ready/active whose items are all terminal."""
        return [int(r[0]) for r in await self._all(Q["unfinished_jobs"])]

    async def claim(
        self, owner: str, job_id: int, shard_id: int, limit: int, *, lease_seconds: float,
        now: float | None = None,
    ) -> list[Claimed]:
        """Lease up to `limit` due pending items of one job and shard, grouped by tagset."""
        now = time.time() if now is None else now
        rows = await self._all(
            Q["claim"],
            {"owner": owner, "expires": now + lease_seconds, "job_id": job_id,
             "shard_id": shard_id, "now": now, "limit": limit},
        )
        return [Claimed(r[0], r[1], r[2], r[3]) for r in rows]

    async def next_due(self, job_id: int, shard_id: int) -> float | None:
        row = await self._one(Q["next_due"], (job_id, shard_id))
        return float(row[0]) if row and row[0] is not None else None

    async def record(self, owner: str, outcomes: Sequence[Outcome]) -> int:
        """Write outcomes of items this owner leased, in one transaction. Returns rows written.

        An item whose lease was lost (released as dead, or cancelled) is left as it is: the work
        is idempotent, and its new holder records it.
        """
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

    async def register_owner(self, owner: str) -> None:
        host, pid = owner.split(":")[0], int(owner.split(":")[1])
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
            if forget:
                await self.db.execute(Q["delete_owner"], (owner,))
        return int(n)

    async def reap_dead_owners(self, *, stale_seconds: float, me: str | None = None) -> int:
        """Release leases of owners that are gone: a dead pid on this host, or a stale heartbeat."""
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

    async def report_rows(
        self, job_id: int, *, unsuccessful_only: bool = False, page: int = 5000
    ) -> AsyncIterator[sqlite3.Row]:
        """Every item of a job in id order, read a page at a time (flat memory)."""
        query = Q["report_page_unsuccessful" if unsuccessful_only else "report_page"]
        last = 0
        while True:
            rows = await self._all(query, (job_id, last, page))
            for row in rows:
                yield row
            if len(rows) < page:
                return
            last = rows[-1]["id"]


# -- discovery and verification -----------------------------------------------------------------


@dataclass(slots=True)
class Discovery:
    id: int
    job_id: int
    partition: str
    account: str
    region: str
    state: str
    token: str | None
    token_at: float | None
    pages: int
    found: int
    restarts: int
    error: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Discovery:
        return cls(row["id"], row["job_id"], row["partition"], row["account"], row["region"],
                   row["state"], row["token"], row["token_at"], row["pages"], row["found"],
                   row["restarts"], row["error"])


class DiscoveryStore:
    """The discovery and verification half of the store, on the same connection and lock."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, job_id: int, pairs: Iterable[tuple[str, str, str]]) -> None:
        now = time.time()
        async with self.store.transaction():
            await self.store.db.executemany(
                Q["create_discovery"], [(job_id, p, a, r, now) for p, a, r in pairs]
            )

    async def claim(self, owner: str, job_ids: set[int] | None) -> Discovery | None:
        row = await self.store._one(
            Q["claim_discovery"],
            {"owner": owner, "now": time.time(),
             "jobs": None if job_ids is None else json.dumps(sorted(job_ids))},
        )
        return Discovery.from_row(row) if row else None

    async def save_page(self, d: Discovery, owner: str, token: str | None, found: int) -> None:
        now = time.time()
        await self.store._write(Q["save_discovery_page"], (token, now, found, now, d.id, owner))

    async def restart(self, d: Discovery) -> None:
        await self.store._write(Q["restart_discovery"], (time.time(), d.id))

    async def finish(self, d: Discovery, state: str, error: str | None = None) -> None:
        await self.store._write(Q["finish_discovery"], (state, error, time.time(), d.id))

    async def of_job(self, job_id: int) -> list[Discovery]:
        return [Discovery.from_row(r) for r in await self.store._all(Q["job_discoveries"],
                                                                        (job_id,))]

    async def skip(self, job_id: int, skipped: Sequence[tuple[str, str]]) -> int:
        """Mark pending items `skipped` with a reason: (arn, reason) pairs."""
        if not skipped:
            return 0
        now = time.time()
        async with self.store.transaction():
            cur = await self.store.db.executemany(
                Q["skip_arn"], [(now, reason, job_id, arn) for arn, reason in skipped]
            )
            n = cur.rowcount
            await cur.close()
        return int(n)

    async def succeeded(self, job_id: int, page: int = 1000) -> AsyncIterator[list[sqlite3.Row]]:
        """Succeeded items of a job, a page at a time."""
        last = 0
        while True:
            rows = await self.store._all(Q["succeeded_page"], (job_id, last, page))
            if rows:
                yield rows
            if len(rows) < page:
                return
            last = rows[-1]["id"]

    async def set_drift(self, results: Sequence[tuple[int, str | None]]) -> None:
        now = time.time()
        async with self.store.transaction():
            await self.store.db.executemany(
                Q["set_drift"], [(now, drift, item_id) for item_id, drift in results]
            )


# -- report exports -----------------------------------------------------------------------------


async def merge_job_options(store: Store, job_id: int, options: dict[str, Any]) -> None:
    """Set top-level keys of a job's options, keeping the others (JSON merge patch: a None
    value removes its key). Used to remember an export destination and the last export."""
    await store._write(Q["merge_job_options"], (json.dumps(options), time.time(), job_id))


class AccountPauses:
    """Accounts paused for a job after their role was refused (--on-access-error pause)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def pause(self, job_id: int, account: str, reason: str) -> bool:
        """True when this call paused it (False: it already was)."""
        return await self.store._write(Q["pause_account"],
                                       (job_id, account, reason, time.time())) > 0

    async def of_job(self, job_id: int) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in await self.store._all(Q["paused_accounts"], (job_id,))]

    async def clear(self, job_id: int) -> int:
        return await self.store._write(Q["clear_paused_accounts"], (job_id,))
