"""The SQLite backend: jobs, items, tagsets and shards in one file on one host.

The operations are written once for both backends in `sqlstore.py`; this module supplies the
primitives they run on (one statement, a transaction, executemany over rows), opening and
migrating, and the bulk inserts SQLite does its own way (runs of items as one JSON parameter,
counters added up per statement). All SQL lives in `sql/sqlite.sql` and the numbered files of
`migrations/sqlite/`. One aiosqlite connection per store; a lock keeps one coroutine's
transaction from interleaving with another's. WAL mode with synchronous=NORMAL: a process killed
at any point leaves the file consistent, and other processes read while one writes. The file
and its directory are private to their user (0600 in 0700): they hold whole account
inventories.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import itertools
import json
import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bulktag.arn import Shard
from bulktag.store.base import Loader
from bulktag.store.models import (
    Conflict,
    ItemRecord,
    ItemState,
    JobOptions,
    Loaded,
    NewItem,
    StoreError,
)
from bulktag.store.sqlstore import RowsStep, SqlStore, Step, load_queries, migrations_dir

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


#: the page cache (PRAGMA cache_size: negative is KiB): 16 MiB. A run of 1M random-order ARNs
#: over 400 shards peaked at 243 MB with 64 MiB and 187 MB with 16, at the same CPU per ARN
#: (a claim reads one shard's items, which lie together); big loads set LOAD_CACHE_KIB.
CACHE_KIB = -16384
#: each connection's page cache while a loader runs (the store's and its two lanes'): the
#: moves run in ARN order and gain nothing measurable from more, and SQLite's sorter takes
#: as much again; 1M random rows: 192 MB peak with 16 MiB, 140 MB with 4 MiB, at one rate
LOAD_CACHE_KIB = -4096
BUSY_MS = 60_000  #: how long a statement waits for another connection's write lock
LOAD_BUSY_MS = 600_000  #: ... on the store's connection while its process loads a file

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


async def _landed(db: aiosqlite.Connection, sql: str) -> None:
    """Execute `sql`; if cancelled meanwhile, wait until it has run, then re-raise."""
    task = asyncio.ensure_future(db.execute(sql))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


@asynccontextmanager
async def _transaction(db: aiosqlite.Connection, lock: asyncio.Lock, begin: str,
                       refused: Callable[[sqlite3.OperationalError], Exception]
                       ) -> AsyncIterator[None]:
    """`begin` … COMMIT on `db` under `lock` (rolled back on any error); `refused` turns a
    BEGIN that fails into the error to raise.

    aiosqlite runs a statement to its end even when the coroutine awaiting it is cancelled,
    so BEGIN, COMMIT and ROLLBACK are awaited to completion whatever happens: a Ctrl-C while
    another process holds the write lock never leaves a connection inside a transaction
    nobody will end.
    """
    async with lock:
        try:
            await _landed(db, begin)
        except asyncio.CancelledError:
            if db.in_transaction:
                await _landed(db, "ROLLBACK")
            raise
        except sqlite3.OperationalError as exc:
            raise refused(exc) from None
        try:
            yield
        except BaseException:
            await _landed(db, "ROLLBACK")
            raise
        else:
            await _landed(db, "COMMIT")


class _Lane:
    """A loader's staging table and the connection it lives on (TEMP: private to it)."""

    def __init__(self, db: aiosqlite.Connection, lock: asyncio.Lock, table: str) -> None:
        self.db, self.lock, self.table = db, lock, table
        self.staged = self.invalid = 0  # rows (and invalid ones) staged since its last move

    def q(self, name: str) -> str:
        return Q[name].replace("item_staging", self.table)


async def _lane_connection(path: str) -> aiosqlite.Connection:
    """A connection of a loader's own to the store's file: stages while another moves."""
    pending = aiosqlite.connect(path, isolation_level=None)
    try:
        db = await pending
    except (OSError, sqlite3.Error) as exc:
        thread = getattr(pending, "_thread", None)
        if thread is not None:  # as in SqliteStore.connect
            await asyncio.to_thread(thread.join, 5.0)
        raise StoreError(_open_problem(path, exc)) from None
    try:
        for pragma in (f"busy_timeout = {BUSY_MS}", "synchronous = NORMAL",
                       f"cache_size = {LOAD_CACHE_KIB}"):
            await db.execute(f"PRAGMA {pragma}")
    except BaseException:
        await db.close()
        raise
    return db


class _Loader(Loader):
    """Rows staged in TEMP tables, moved by one INSERT … SELECT … ORDER BY arn per flush
    (`Store.loader`). A store on a file gets two lanes, each a connection of the loader's own,
    so one lane stages (its TEMP table: no lock on the store's file) while the other moves (the
    write lock, as any writer); an in-memory store has one lane, on its own connection."""

    _made = itertools.count(1)

    def __init__(self, store: SqliteStore, job_id: int) -> None:
        super().__init__(1 if store.location == ":memory:" else 2)
        self.store, self.job_id = store, job_id
        self._lanes: list[_Lane] = []
        self._own: list[aiosqlite.Connection] = []  # the lanes' connections, closed at the end
        self._count_trigger = False

    @property
    def staged(self) -> int:
        return self._lanes[self._lane].staged if self._lanes else 0

    def _begin(self, lane: _Lane, begin: str = "BEGIN IMMEDIATE"
               ) -> AbstractAsyncContextManager[None]:
        return _transaction(lane.db, lane.lock, begin, self.store._read_only)

    async def _open(self) -> None:
        store = self.store
        if self.lanes == 1:
            self._lanes.append(_Lane(store.db, store._lock, f"item_staging_{next(self._made)}"))
        else:
            for _ in range(self.lanes):
                self._own.append(await _lane_connection(store.location))
                self._lanes.append(_Lane(self._own[-1], asyncio.Lock(), "item_staging"))
        for lane in self._lanes:
            async with self._begin(lane, "BEGIN"):
                await lane.db.execute(lane.q("staging_create"))
                await lane.db.execute(lane.q("staging_clear"))
        async with store._lock:
            self._count_trigger = await store._has_count_trigger()
            # the store's own connection too (LOAD_CACHE_KIB)
            await store.db.execute(f"PRAGMA cache_size = {LOAD_CACHE_KIB}")
            # The lanes' moves hold the write lock for their length (a 4M-row move 10-15 s
            # here, more on a slow disk): this process's own writers (the run of the job
            # being read, the loader's sign of life) wait them out.
            await store.db.execute(f"PRAGMA busy_timeout = {LOAD_BUSY_MS}")

    async def _close(self) -> None:
        store = self.store
        async with store._lock:
            await store.db.execute(f"PRAGMA cache_size = {CACHE_KIB}")
            await store.db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        for lane in self._lanes:
            if lane.db is store.db:
                async with self._begin(lane, "BEGIN"):
                    await lane.db.execute(f"DROP TABLE IF EXISTS temp.{lane.table}")
        for db in self._own:  # its TEMP table goes with it
            with contextlib.suppress(Exception):
                await db.close()
        self._own, self._lanes = [], []

    async def _ids(self, items: Sequence[NewItem]) -> tuple[dict[int, int], dict[str, int]]:
        """The items' shard and tagset ids: from the store's cache when it knows them all (no
        transaction: a lane moving holds the write lock), else made in a transaction."""
        store = self.store
        known = store._known_ids(items)
        if known is not None:
            return known
        try:
            async with store.transaction():
                return await store._item_ids(items)
        except BaseException:
            store._forget_ids()
            raise

    async def stage(self, items: Sequence[NewItem]) -> None:
        lane = self._lanes[self._lane]
        shard_ids, tagset_ids = await self._ids(items)
        # Valid rows by (shard, tagset, route), each group one INSERT … SELECT over a JSON
        # array of "LINE ARN" texts: SQLite parses it without holding the GIL (binding rows
        # one by one held it, and fought the parsing thread for it).
        groups: dict[tuple[int, int, str], list[str]] = {}
        invalid = []
        for it in items:
            if it.problem is not None or it.shard is None or it.tagset is None:
                invalid.append((it.arn, it.line, 0, 0, it.route, it.problem))
                continue
            key = (shard_ids[id(it.shard)], tagset_ids[it.tagset], it.route)
            group = groups.get(key)
            if group is None:
                group = groups[key] = []
            group.append(f"{it.line or 0} {it.arn}")
        async with self._begin(lane, "BEGIN"):  # the TEMP table only: no lock on the file
            if groups:
                await lane.db.executemany(lane.q("stage_group"), [
                    (json.dumps(texts, ensure_ascii=False), sid, tid, route)
                    for (sid, tid, route), texts in groups.items()])
            if invalid:
                await lane.db.executemany(lane.q("stage_item"), invalid)
        lane.staged += len(items)
        lane.invalid += len(invalid)

    async def _move(self, n: int, show: int) -> Loaded:
        lane, job_id = self._lanes[n], self.job_id
        db = lane.db
        async with self._begin(lane):
            cur = await db.execute(Q["max_item_id"])
            row = await cur.fetchone()
            last_id = (row[0] if row else 0) or 0
            await cur.close()
            cur = await db.execute(lane.q("move_staged"), (job_id, time.time()))
            added = int(cur.rowcount)
            await cur.close()
            if added and not self._count_trigger:
                if added == lane.staged:  # every staged row went in: count the staging table
                    await db.execute(lane.q("add_staged_counts"), (job_id,))
                else:
                    await db.execute(Q["add_counts"], (job_id, last_id))
                if lane.invalid:
                    await db.execute(Q["add_error_counts"], (job_id, last_id))
            loaded = Loaded(lane.staged, added)
            if added < lane.staged:  # repeated ARNs: harmless if they ask the same
                cur = await db.execute(lane.q("staged_conflict_count"), (job_id,))
                loaded.n_conflicts = int((await cur.fetchone())[0])  # type: ignore[index]
                await cur.close()
                if loaded.n_conflicts:
                    cur = await db.execute(lane.q("staged_conflicts"), (job_id, show))
                    loaded.conflicts = [Conflict(*r) for r in await cur.fetchall()]
                    await cur.close()
            await db.execute(lane.q("staging_clear"))
        lane.staged = lane.invalid = 0
        return loaded


class SqliteStore(SqlStore):
    queries = Q
    unique_violation = sqlite3.IntegrityError

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        super().__init__()
        self.db = db
        self.location = path
        self._lock = asyncio.Lock()
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
            await db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            # CACHE_KIB of page cache (the default is 2 MiB): claims, records and add_items
            # keep the indexes' hot pages in memory instead of re-reading them from the WAL.
            await db.execute(f"PRAGMA cache_size = {CACHE_KIB}")
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
        await self._one("metrics_ping")

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
        """BEGIN IMMEDIATE … COMMIT under the store's lock (rolled back on any error)."""
        async with _transaction(self.db, self._lock, "BEGIN IMMEDIATE", self._read_only):
            yield

    # -- the dialect's primitives ----------------------------------------------------------

    async def _one(self, query: str, params: Sequence[Any] = (), *, safe: bool = True) -> Any:
        async with self._lock:
            try:  # some are writes (INSERT ... RETURNING)
                cur = await self.db.execute(self._sql(query), params)
            except sqlite3.OperationalError as exc:
                raise self._read_only(exc) from None
            row = await cur.fetchone()
            await cur.close()
            return row

    async def _all(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._lock:
            try:  # some are writes (UPDATE ... RETURNING)
                cur = await self.db.execute(self._sql(query), params)
                rows = await cur.fetchall()
            except sqlite3.OperationalError as exc:
                raise self._read_only(exc) from None
            await cur.close()
            return list(rows)

    async def _write(self, query: str, params: Sequence[Any] = (), *,
                     safe: bool = True) -> int:
        async with self._lock:
            try:
                cur = await self.db.execute(self._sql(query), params)
            except sqlite3.OperationalError as exc:
                raise self._read_only(exc) from None
            n = cur.rowcount
            await cur.close()
            return n

    def _read_only(self, exc: sqlite3.OperationalError) -> Exception:
        """A write refused because the file cannot be written: a StoreError saying so (exit
        2); any other error as it was."""
        if "readonly" not in str(exc) and "read-only" not in str(exc):
            return exc
        return StoreError(f"the store {self.location} is read-only (no permission to write "
                          "the file, an immutable file or a read-only file system): nothing "
                          "was written; give --db a store you can write, or fix its "
                          "permissions")

    async def _script(self, steps: Sequence[Step]) -> list[int]:
        if len(steps) == 1:  # one statement is a transaction of its own
            return [await self._write(*steps[0])]
        counts = []
        async with self.transaction():
            for query, params in steps:
                cur = await self.db.execute(self._sql(query), params)
                counts.append(cur.rowcount)
                await cur.close()
        return counts

    async def _many(self, *steps: RowsStep, safe: bool = True) -> int:
        if not any(rows for _, _, rows in steps):
            return 0
        n = 0
        async with self.transaction():
            for query, head, rows in steps:
                if rows:
                    cur = await self.db.executemany(self._sql(query),
                                                    [(*head, *row) for row in rows])
                    n += cur.rowcount
                    await cur.close()
        return int(n)

    def _id_list(self, ids: list[int]) -> Any:
        return json.dumps(ids)

    def _text_list(self, texts: list[str]) -> Any:
        return json.dumps(texts, ensure_ascii=False)

    # -- what SQLite does its own way ------------------------------------------------------

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

    async def finish_import(self) -> None:
        """Nothing to move: an INTEGER PRIMARY KEY takes max(id) + 1."""

    # -- bulk inserts: shards and tagsets resolved inside the items' transaction -----------

    async def _shard_id(self, shard: Shard) -> int:
        sid = self._shard_ids.get(shard)
        if sid is None:
            cur = await self.db.execute(
                Q["upsert_shard"], (shard.partition, shard.account, shard.region))
            row = await cur.fetchone()
            assert row is not None  # RETURNING of an upsert always yields the row
            sid = int(row[0])
            await cur.close()
            self._remember_shard(sid, shard)
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
            self._remember_tagset(tid, body)
        return tid

    async def _has_count_trigger(self) -> bool:
        """A store made before counts were added per statement keeps an insert trigger."""
        if self._count_trigger is None:
            cur = await self.db.execute(Q["has_count_trigger"])
            self._count_trigger = await cur.fetchone() is not None
            await cur.close()
        return self._count_trigger

    @staticmethod
    def _id_keys(items: Sequence[NewItem]) -> tuple[dict[int, Shard], set[str]]:
        """The items' shards keyed by the Shard object's identity (a submission's items share
        one object per shard, and hashing a dataclass per row costs more than the row's
        insert), and their tagsets."""
        return ({id(it.shard): it.shard for it in items if it.shard is not None},
                {it.tagset for it in items if it.tagset is not None})

    def _known_ids(self, items: Sequence[NewItem]
                   ) -> tuple[dict[int, int], dict[str, int]] | None:
        """`_item_ids` from the caches alone, without a statement; None if one is missing."""
        shards, tagsets = self._id_keys(items)
        shard_ids = {key: self._shard_ids.get(sh) for key, sh in shards.items()}
        tagset_ids = {b: self._tagset_ids.get(b) for b in tagsets}
        if None in shard_ids.values() or None in tagset_ids.values():
            return None
        return shard_ids, tagset_ids  # type: ignore[return-value]

    async def _item_ids(self, items: Sequence[NewItem]
                        ) -> tuple[dict[int, int], dict[str, int]]:
        """The ids of the items' shards (keyed as `_id_keys` keys them) and tagsets; made
        where missing (inside the caller's transaction)."""
        shards, tagsets = self._id_keys(items)
        shard_ids = {key: await self._shard_id(sh) for key, sh in shards.items()}
        tagset_ids = {b: await self._tagset_id(b) for b in tagsets}
        return shard_ids, tagset_ids

    async def _add_items(self, job_id: int, items: Sequence[NewItem], now: float) -> int:
        """Valid items go in as runs of consecutive items of one shard and tagset, each run one
        INSERT … SELECT over a JSON array (one bound parameter, not ten per row), so item ids
        keep the input order. Counters are then added up from the rows this transaction
        inserted (ids above the previous maximum; duplicates inserted nothing), one statement
        each instead of a trigger firing per row."""
        async with self.transaction():
            count_trigger = await self._has_count_trigger()
            cur = await self.db.execute(Q["max_item_id"])
            row = await cur.fetchone()
            last_id = (row[0] if row else 0) or 0
            await cur.close()
            runs = _runs(items)
            if len(runs) > _MAX_RUNS:  # rows of many shards interleaved: one statement
                # Shard and tagset ids first (a few distinct ones), then the rows in ARN order,
                # each with the id its place in the input gives it: the (job, arn) index is
                # filled in order within the chunk instead of at random places (random-order
                # input), while ids still follow the input (the rowid B-tree only gets pages
                # past its end). A stable sort keeps the first row of a repeated ARN first.
                shard_ids, tagset_ids = await self._item_ids(items)
                rows: list[tuple[Any, ...]] = []
                order = sorted(range(len(items)), key=lambda n: items[n].arn)
                for n in order:
                    it = items[n]
                    if it.problem is not None or it.shard is None or it.tagset is None:
                        rows.append((last_id + 1 + n, job_id, it.arn, 0, 0, "invalid", it.line,
                                     "InvalidInput", None, it.problem, now, it.route))
                    else:
                        rows.append((last_id + 1 + n, job_id, it.arn, shard_ids[id(it.shard)],
                                     tagset_ids[it.tagset], "pending", it.line,
                                     None, None, None, None, it.route))
                cur = await self.db.executemany(Q["insert_item_at"], rows)
                added = cur.rowcount
                await cur.close()
            else:
                added = 0
                for shard, body, run in runs:
                    added += await self._insert_run(job_id, shard, body, run, now)
            if added and not count_trigger:
                await self.db.execute(Q["add_counts"], (job_id, last_id))
                await self.db.execute(Q["add_error_counts"], (job_id, last_id))
        return int(added)

    def loader(self, job_id: int) -> _Loader:
        return _Loader(self, job_id)

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

    async def _import_items(self, records: Sequence[ItemRecord]) -> int:
        """One executemany; counters added up here from the records (an id conflict aborts
        the whole page, so every record counted was inserted)."""
        counts: Counter[tuple[int, int, str, str]] = Counter()
        errors: Counter[tuple[int, str]] = Counter()
        async with self.transaction():
            count_trigger = await self._has_count_trigger()
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
            if not count_trigger:
                await self.db.executemany(Q["import_counts"],
                                          [(*k, n) for k, n in sorted(counts.items())])
                await self.db.executemany(Q["import_error_counts"],
                                          [(*k, n) for k, n in sorted(errors.items())])
        return len(rows)
