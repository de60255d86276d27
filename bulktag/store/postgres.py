"""The PostgreSQL backend: one queue shared by a fleet of workers on many hosts.

Same contract and same tables as `sqlite.py`, and the same operations: `sqlstore.py` writes
them once over named queries; this module supplies the primitives they run on and what differs
because a server has concurrent writers. All SQL lives in `sql/postgres.sql` and the numbered
files of `migrations/postgres/`; Python only picks a query by name.

- An asyncpg pool (1 to 10 connections) per store; each call borrows a connection for one
  statement or one transaction. Times are epoch seconds as DOUBLE PRECISION from the caller's
  clock, as in SQLite, so leases compare across hosts only as well as their clocks agree (keep
  them on NTP; leases are minutes, skew is milliseconds).
- Claims pick rows with `FOR UPDATE SKIP LOCKED`: owners claiming the same job and shard at once
  each take rows the other has not locked, never the same row, and never wait for each other.
  `record` is one UPDATE over arrays (unnest), landing only where this owner still holds the
  lease. `add_items` inserts chunks as arrays too, with `ON CONFLICT (job_id, arn) DO NOTHING`.
- Counters (counts, error_counts) follow items through statement-level triggers over
  transition tables: one aggregate per statement rather than a function call per row, so a
  claim of 1,000 items costs one counter upsert per key, and `status` on any job size reads a
  handful of counter rows, never items. Measured on 200,000 items (2 shared cores, local
  server): enqueue 73,000 items/s against 2,300 with row-level triggers (every row re-updates
  the same counter row inside one transaction), claim+record of 1,000-item batches 36,000/s
  against 12,000, cancelling 160,000 items 1.5 s against 204 s.
- Shards and tagsets are created before the items' transaction, in their own short statements
  (`ON CONFLICT DO NOTHING`, no row locks held), then cached: concurrent submitters and
  discovery walkers adding to one job do not queue behind each other's transactions on a shared
  tagset row.
- Migrations run at open under a fixed `pg_advisory_lock`, each in its own transaction, recorded
  in `schema_migrations`: ten workers opening a new database at once migrate it once.
- The pool reconnects by itself after a server restart; each store call retries on a lost
  connection with a short backoff for up to a minute, then raises `StoreError`. Reads and
  writes that are safe to repeat are retried whatever failed: a `record` repeated after it
  landed changes nothing (the lease is gone), a claim repeated after it landed leaves the first
  claim's leases to expire. A write that is not safe to repeat (`create_job`, `add_sync_rule`,
  the discovery page counters) is retried only when the connection failed before it was sent.
  A deadlock victim (rolled back whole) is retried too: counters are locked in key order within
  a statement, but a multi-chunk add_items and a record spanning shards can still cross.
- `location` is the URL without its password, for messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import structlog

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the installation
    from bulktag.store.models import StoreError

    raise StoreError("a postgresql:// store needs the asyncpg package: pip install asyncpg") \
        from exc

from bulktag.arn import Shard
from bulktag.store.base import Loader
from bulktag.store.models import Conflict, ItemRecord, Loaded, NewItem, StoreError
from bulktag.store.sqlstore import RowsStep, SqlStore, Step, load_queries, migrations_dir

Q = load_queries("postgres")


class _PoolWarnings(logging.Handler):
    """asyncpg's own warnings (its pool restoring its connection floor while the database
    restarts, logged with the exception) as one structured event each, without a traceback,
    at most one in 30 s: a database restart is an event, not a traceback on the terminal."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._last = -1e9

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if now - self._last < 30:
            return
        self._last = now
        exc = record.exc_info[1] if record.exc_info else None
        log.warning("store_unreachable", source=record.name, message=record.getMessage(),
                    **({"error": f"{type(exc).__name__}: {exc}"} if exc is not None else {}),
                    hint="retrying; nothing is lost")


def _bridge_pool_warnings() -> None:
    pool_log = logging.getLogger("asyncpg")
    if not any(isinstance(h, _PoolWarnings) for h in pool_log.handlers):
        pool_log.addHandler(_PoolWarnings())
    pool_log.propagate = False


_bridge_pool_warnings()

T = TypeVar("T")

ADD_CHUNK = 10_000  # items per INSERT … SELECT FROM unnest(…)
RESOLVE_CHUNK = 10_000  # shards or tagsets per upsert
log = structlog.get_logger("bulktag.store")
POOL_MIN, POOL_MAX = 1, 10
LOAD_WORK_MEM = "128MB"  # per loader commit (server memory, for its sort)
LOAD_PARTS = 2  # server processes moving a loader's rows at once (_Loader)
ANALYZE_AFTER = 100_000  # a loader analyzes items once it moved this many rows, then at doubling
CONNECT_TIMEOUT = 10.0  # seconds to open one connection
#: Every connection asks the server to probe a silent client: a peer gone without closing its
#: connections (a host that vanished) is noticed within idle + interval × count = 25 s, its
#: session ends and its advisory lock with it.
SERVER_SETTINGS = {"application_name": "bulktag", "tcp_keepalives_idle": "10",
                   "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}
SESSION_CHECK_TIMEOUT = 2.0  # seconds a worker's session may take to answer before it is lost


def session_key(owner: str) -> int:
    """The advisory lock a worker's session holds for its whole life (a signed 64-bit key)."""
    digest = hashlib.blake2b(owner.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
RETRY_SECONDS = 60.0  # how long a call keeps retrying a lost connection
RETRY_FIRST, RETRY_MAX = 0.1, 2.0  # backoff between retries


# -- URLs and errors --------------------------------------------------------------------------


def _redact(url: str) -> str:
    """The URL without its password (in the user part or a `password=` parameter)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostinfo = netloc.rpartition("@")
    if at:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostinfo}" if user else hostinfo
    query = urllib.parse.urlencode(
        [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
         if k.lower() != "password"])
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _target(url: str) -> tuple[str, str, str]:
    """(host:port, database, user) the URL names, with libpq's defaults, for messages."""
    parts = urllib.parse.urlsplit(url)
    params = dict(urllib.parse.parse_qsl(parts.query))
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    user = urllib.parse.unquote(userinfo.split(":", 1)[0]) if at else ""
    user = user or params.get("user") or os.environ.get("PGUSER") or _local_user()
    host = hostinfo or params.get("host") or os.environ.get("PGHOST") or "localhost"
    if ":" not in host.rsplit("]", 1)[-1]:
        host = f"{host}:{params.get('port') or os.environ.get('PGPORT') or 5432}"
    database = (urllib.parse.unquote(parts.path.lstrip("/")) or params.get("dbname")
                or os.environ.get("PGDATABASE") or user)
    return host, database, user


def _local_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return "?"


def _connect_problem(url: str, exc: BaseException) -> str:
    """Say why a PostgreSQL store cannot be opened, in words an operator can act on."""
    hostport, database, user = _target(url)
    where = f"PostgreSQL at {hostport}"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return (f"{where} has no database {database!r}: create it (createdb -h "
                f"{hostport.rsplit(':', 1)[0]} -p {hostport.rsplit(':', 1)[1]} {database}) or "
                "fix the database name in the URL")
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return (f"{where} refused the password of user {user!r} for database {database!r}: "
                "check the password in the URL, PGPASSWORD or ~/.pgpass")
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return (f"{where} refused user {user!r} for database {database!r} ({exc}): check the "
                "user name in the URL and the server's pg_hba.conf")
    if isinstance(exc, asyncpg.CannotConnectNowError):
        return f"{where} is starting up or shutting down ({exc}); try again in a moment"
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return (f"{where} has no free connection ({exc}): raise max_connections or run fewer "
                "workers against it")
    if isinstance(exc, (OSError, asyncpg.PostgresConnectionError)):
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return (f"cannot reach {where} (database {database!r}): {reason or type(exc).__name__};"
                " is the server running and listening there? Check the host and port in the "
                "URL")
    if isinstance(exc, (ValueError, asyncpg.ClientConfigurationError)):
        return f"invalid PostgreSQL URL {_redact(url)}: {exc}"
    return f"cannot open the store {_redact(url)}: {exc}"


def _lost(exc: BaseException) -> bool:
    """A connection that broke or could not be made (server down, restarting, network)."""
    if isinstance(exc, (asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                        asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
                        ConnectionError, TimeoutError, socket.gaierror)):
        return True
    if isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, ValueError):
        text = str(exc)
        return "connection" in text and "closed" in text  # not "pool is closed": ours
    if isinstance(exc, asyncpg.InternalClientError):
        # An idle connection the server ended (restart, pg_terminate_backend) is left in a
        # state where the next statement fails with "cannot switch to state N; another
        # operation (2) is in progress" (MagicStack/asyncpg#1069): that connection is gone.
        return "another operation" in str(exc) or "cannot switch to state" in str(exc)
    return isinstance(exc, OSError) and exc.errno is not None


def _rowcount(status: str) -> int:
    """Rows a statement touched, from its command tag ("UPDATE 5", "INSERT 0 5")."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


def _valid(it: NewItem) -> bool:
    """An item that goes to the API (an invalid one has no shard or tagset, and a reason)."""
    return it.problem is None and it.shard is not None and it.tagset is not None


async def _together(calls: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run calls at once; the first to fail cancels the others and waits for them (no call
    is left running on its connection), then is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


class _Loader(Loader):
    """Rows COPYed into TEMP tables on connections held for the loader's life, moved by one
    INSERT … SELECT … ORDER BY arn per table and flush (`Store.loader`). Two lanes (one is
    filled while the server moves the other), each of LOAD_PARTS tables on connections of
    their own, a row's table chosen by its ARN's hash: a lane's parts are moved at once, by
    as many server processes (one inserts a million rows in 8-10 s on 2 cores, two halves
    in 7.5-8.7 s), and the repeats of an ARN are always in one part (the first row kept, a
    conflict found). A lost connection loses only what was staged since the last move, and
    ends the load with a StoreError."""

    def __init__(self, store: PostgresStore, job_id: int) -> None:
        super().__init__(2)
        self.store, self.job_id = store, job_id
        self._cons: list[list[Any]] = []  # per lane, per part
        self._staged = [[0] * LOAD_PARTS for _ in range(self.lanes)]  # per lane, per part
        self._moved = self._analyzed = 0  # rows moved in all, and when items was last analyzed

    @property
    def staged(self) -> int:
        return sum(self._staged[self._lane])

    async def _open(self) -> None:
        for _ in range(self.lanes):
            self._cons.append([])
            for _ in range(LOAD_PARTS):
                con = await self.store._pool.acquire()
                self._cons[-1].append(con)
                await con.execute(Q["staging_create"])
                await con.execute(Q["staging_clear"])

    async def _close(self) -> None:
        """Every connection back to the pool, whatever happened to the others; one that
        cannot drop its table is closed. The first error that is not a lost session is
        raised after."""
        cons, self._cons = [c for lane in self._cons for c in lane], []
        first: Exception | None = None
        for con in cons:
            try:
                await con.execute(Q["staging_drop"])
            except Exception as err:  # the session is gone (or busy), and its table with it
                if not _lost(err) and first is None:
                    first = err
                with contextlib.suppress(asyncpg.InterfaceError):
                    con.terminate()
            finally:
                await self.store._pool.release(con)
        if first is not None:
            raise first

    @contextlib.contextmanager
    def _connected(self) -> Iterator[None]:
        """A lost connection ends the load with a StoreError saying what is kept."""
        try:
            yield
        except Exception as exc:
            if _lost(exc):
                raise StoreError(
                    f"lost the connection to {self.store.location} while loading items "
                    f"({type(exc).__name__}: {exc}); what was committed is kept: run the "
                    "same command again to continue") from exc
            raise

    async def stage(self, items: Sequence[NewItem]) -> None:
        shard_ids, tagset_ids = await self.store._item_ids(items)
        parts: list[list[tuple[Any, ...]]] = [[] for _ in range(LOAD_PARTS)]
        for it in items:
            parts[hash(it.arn) % LOAD_PARTS].append(
                (it.arn, it.line, shard_ids[it.shard], tagset_ids[it.tagset], it.route, None)
                if it.shard is not None and it.tagset is not None and _valid(it)
                else (it.arn, it.line, 0, 0, it.route, it.problem))
        with self._connected():
            await _together([con.copy_records_to_table(
                "item_staging", records=records,
                columns=["arn", "line", "shard_id", "tagset_id", "route", "problem"])
                for con, records in zip(self._cons[self._lane], parts, strict=True)
                if records])
        for n, records in enumerate(parts):
            self._staged[self._lane][n] += len(records)

    async def _move(self, lane: int, show: int) -> Loaded:
        staged = sum(self._staged[lane])
        with self._connected():
            moved = await _together([
                self._move_part(con, n, show)
                for con, n in zip(self._cons[lane], self._staged[lane], strict=True)])
        self._staged[lane] = [0] * LOAD_PARTS
        added = sum(n for n, _, _ in moved)
        self._moved += added
        if self._moved >= max(ANALYZE_AFTER, 2 * self._analyzed):
            # Fresh statistics for the planner: before autovacuum got to a 10M-row load, a
            # report page read the whole job and sorted it (3.8 s a page; 1.8 ms after).
            with self._connected():
                await self._cons[lane][0].execute("ANALYZE items")
            self._analyzed = self._moved
        conflicts = sorted((c for _, _, cs in moved for c in cs), key=lambda c: c.line or 0)
        return Loaded(staged, added, conflicts[:show], sum(n for _, n, _ in moved))

    async def _move_part(self, con: Any, staged: int, show: int
                         ) -> tuple[int, int, list[Conflict]]:
        """Move one part's staged rows: (added, conflicting rows, the first `show` of them)."""
        try:
            return await self._move_part_by(con, "move_staged", staged, show)
        except asyncpg.UniqueViolationError:
            # Another loader of this job inserted the same ARN meanwhile (one reaped as gone
            # while it still ran): the move, rolled back, goes again taking what is there.
            return await self._move_part_by(con, "move_staged_on_conflict", staged, show)

    async def _move_part_by(self, con: Any, query: str, staged: int, show: int
                            ) -> tuple[int, int, list[Conflict]]:
        async with con.transaction():
            # the sort by ARN in memory, not in temporary files (the session's default is
            # 4 MB: a million staged rows spilled to disk)
            await con.execute(f"SET LOCAL work_mem = '{LOAD_WORK_MEM}'")
            added = _rowcount(await con.execute(Q[query], self.job_id, time.time()))
            n_conflicts, conflicts = 0, []
            if added < staged:  # repeated ARNs: harmless if they ask the same
                n_conflicts = int(await con.fetchval(Q["staged_conflict_count"], self.job_id))
                if n_conflicts:
                    conflicts = [Conflict(*r) for r in await con.fetch(
                        Q["staged_conflicts"], self.job_id, show)]
            await con.execute(Q["staging_clear"])
        return added, n_conflicts, conflicts


class PostgresStore(SqlStore):
    queries = Q
    unique_violation = asyncpg.UniqueViolationError
    lease_scan_setup = (("plain_index_scans", ()),)

    def __init__(self, pool: Any, url: str) -> None:
        super().__init__()
        self._pool = pool
        self._url = url
        self.location = _redact(url)
        self._closing = False
        self._down_since: float | None = None  # when the server stopped answering
        self._session: Any = None  # the connection holding this worker's advisory lock
        self._session_owner: str | None = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    async def connect(cls, url: str, *, create: bool = True) -> PostgresStore:
        """Open a pool on the database the URL names and apply pending migrations. The database
        itself is made by its administrator, never by bulktag; `create=False` (a command that
        only reads) refuses one holding no store yet rather than making the tables there."""
        migrations = [(int(p.name.split("_", 1)[0]), p.name, p.read_text())
                      for p in sorted(migrations_dir("postgres").glob("*.sql"))]
        parts = urllib.parse.urlsplit(url)
        if not parts.path.strip("/") and not urllib.parse.parse_qs(parts.query).get("dbname"):
            raise StoreError(f"the store URL {_redact(url)} names no database (libpq would "
                             "pick a default one): add it, e.g. postgresql://HOST/bulktag")
        try:
            pool = await asyncpg.create_pool(
                url, min_size=POOL_MIN, max_size=POOL_MAX, timeout=CONNECT_TIMEOUT,
                server_settings=SERVER_SETTINGS)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StoreError(_connect_problem(url, exc)) from None
        store = cls(pool, url)
        try:
            if not create and not await store._run(
                    lambda con: con.fetchval("SELECT to_regclass('schema_migrations')")):
                # as on SQLite: a command that only reads never makes a store where none is
                raise StoreError(f"no store in {store.location} (nothing was submitted there "
                                 "yet); check --db or BULKTAG_DB")
            await store._migrate(migrations)
        except BaseException:
            store._closing = True
            pool.terminate()
            raise
        return store

    async def _migrate(self, migrations: list[tuple[int, str, str]]) -> None:
        async def run(con: Any) -> None:
            await con.execute(Q["migrate_lock"])
            try:
                await con.execute(Q["create_migrations_table"])
                applied = {int(r[0]) for r in await con.fetch(Q["migrations_applied"])}
                for version, name, script in migrations:
                    if version in applied:
                        continue
                    async with con.transaction():
                        await con.execute(script)  # no arguments: several statements at once
                        await con.execute(Q["migration_done"], version, name, time.time())
            finally:
                if not con.is_closed():
                    await con.execute(Q["migrate_unlock"])

        try:
            await self._run(run)
        except asyncpg.PostgresError as exc:
            raise StoreError(f"cannot migrate the store {self.location}: {exc}") from None

    async def close(self) -> None:
        self._closing = True
        if self._session is not None:
            self._session.terminate()
            self._session = None
        try:
            await asyncio.wait_for(self._pool.close(), 10)
        except (TimeoutError, asyncpg.InterfaceError, OSError):
            self._pool.terminate()

    # -- a worker's session: its liveness ---------------------------------------------------

    async def hold_session(self, owner: str) -> None:
        """Take this worker's advisory lock on a connection of its own, held until it stops:
        when the process dies its connection closes and the lock is free at once, which
        tells the others (`_session_gone`) whatever host it ran on."""
        self._session_owner = owner
        await self._lock_session()

    async def _lock_session(self) -> None:
        assert self._session_owner is not None
        con = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT, server_settings={
            **SERVER_SETTINGS, "application_name": "bulktag-session"})
        try:
            held = await con.fetchval("SELECT pg_try_advisory_lock($1)",
                                      session_key(self._session_owner))
        except BaseException:
            con.terminate()
            raise
        if not held:
            con.terminate()
            raise StoreError(f"the session lock of worker {self._session_owner} is held by "
                             "another connection: two workers with one owner token?")
        self._session = con
        self.session_generation += 1

    def session_ok(self) -> bool:
        return self._session is not None and not self._session.is_closed()

    async def check_session(self) -> bool:
        """The session answers (or was made again, its lock taken again: a new generation);
        False while the database cannot be reached."""
        if self._session_owner is None or self._closing:
            return True
        con = self._session
        if con is not None and not con.is_closed():
            try:
                await asyncio.wait_for(con.fetchval("SELECT 1"), SESSION_CHECK_TIMEOUT)
                return True
            except Exception:
                con.terminate()
        self._session = None
        try:
            await asyncio.wait_for(self._lock_session(), CONNECT_TIMEOUT)
        except (StoreError, Exception) as exc:
            if isinstance(exc, StoreError) or not (_lost(exc) or isinstance(
                    exc, (TimeoutError, asyncpg.PostgresError))):
                raise
            return False
        return True

    async def _session_gone(self, owner: str) -> bool:
        """Whether `owner`'s session ended: its advisory lock can be taken (for the length of
        one statement: a transaction-level try, released at once)."""
        return bool(await self._run(lambda con: con.fetchval(
            "SELECT pg_try_advisory_xact_lock($1)", session_key(owner))))

    async def session_alive(self, owner: str) -> bool | None:
        held = await self._one("owner_session", (owner,))
        if not held or not held[0]:
            return None  # registered without one: judged by its heartbeat
        return not await self._session_gone(owner)

    async def ping(self) -> None:
        await self._run(lambda con: con.fetchval(Q["metrics_ping"]), patience=2.0)

    # -- running statements ----------------------------------------------------------------

    async def _run(self, fn: Callable[[Any], Awaitable[T]], *, safe: bool = True,
                   patience: float | None = None) -> T:
        """fn(connection) on a pooled connection, again after a lost connection (with backoff,
        for up to `patience` seconds, RETRY_SECONDS by default) when it is `safe` to repeat or
        was never sent."""
        patience = RETRY_SECONDS if patience is None else patience
        deadline = time.monotonic() + patience
        delay = RETRY_FIRST
        while True:
            sent = False
            try:
                async with self._pool.acquire() as con:
                    sent = True
                    try:
                        result = await fn(con)
                        if self._down_since is not None:
                            log.info("store_reachable_again", store=self.location,
                                     down_seconds=round(time.time() - self._down_since, 1))
                            self._down_since = None
                        return result
                    except Exception as exc:
                        if _lost(exc):
                            # Never hand a broken connection back to the pool for reuse: the
                            # pool opens a new one in its place on the next acquire. When the
                            # server ended it (restart, pg_terminate_backend), asyncpg may have
                            # released it already and detached our proxy, whose terminate()
                            # then raises InterfaceError ("released back to the pool"): that
                            # must not replace the lost-connection error, which is retried.
                            with contextlib.suppress(asyncpg.InterfaceError):
                                con.terminate()
                        raise
            except Exception as exc:
                # A deadlock victim's transaction was rolled back whole: always safe to repeat.
                # (Counters are locked in key order within a statement, but a multi-chunk
                # add_items and a record spanning shards can still cross.)
                deadlock = isinstance(exc, asyncpg.DeadlockDetectedError)
                if self._closing or not (deadlock or _lost(exc)):
                    raise
                if not deadlock and self._down_since is None:
                    self._down_since = time.time()
                    log.warning("store_unreachable", store=self.location,
                                error=f"{type(exc).__name__}: {exc}",
                                hint=f"retrying for up to {patience:.0f} s; nothing is lost")
                if sent and not safe and not deadlock:
                    raise StoreError(
                        f"lost the connection to {self.location} during a write that may or "
                        f"may not have landed ({type(exc).__name__}: {exc}); check before "
                        "repeating it") from exc
                if time.monotonic() + delay > deadline:
                    if deadlock:
                        raise
                    raise StoreError(
                        f"the PostgreSQL store {self.location} has not answered for "
                        f"{patience:.0f} s ({type(exc).__name__}: {exc}); is the server "
                        "running and reachable?") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _tx(self, fn: Callable[[Any], Awaitable[T]], *, safe: bool = True) -> T:
        """fn(connection) inside one transaction (retried whole, like `_run`)."""
        async def run(con: Any) -> T:
            async with con.transaction():
                return await fn(con)

        return await self._run(run, safe=safe)

    # -- the dialect's primitives ----------------------------------------------------------

    async def _one(self, query: str, params: Sequence[Any] = (), *, safe: bool = True) -> Any:
        sql = self._sql(query)
        return await self._run(lambda con: con.fetchrow(sql, *params), safe=safe)

    async def _all(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        sql = self._sql(query)
        return list(await self._run(lambda con: con.fetch(sql, *params)))

    async def _write(self, query: str, params: Sequence[Any] = (), *,
                     safe: bool = True) -> int:
        sql = self._sql(query)
        return _rowcount(str(await self._run(lambda con: con.execute(sql, *params), safe=safe)))

    async def _script(self, steps: Sequence[Step]) -> list[int]:
        async def run(con: Any) -> list[int]:
            return [_rowcount(await con.execute(self._sql(query), *params))
                    for query, params in steps]

        return await self._tx(run)

    async def _many(self, *steps: RowsStep, safe: bool = True) -> int:
        """Each step one statement: its rows as one array per column (unnest in the SQL)."""
        bound = [(query, (*head, *(list(col) for col in zip(*rows, strict=True))))
                 for query, head, rows in steps if rows]
        if len(bound) == 1:
            return await self._write(*bound[0], safe=safe)

        async def run(con: Any) -> int:
            return sum([_rowcount(await con.execute(self._sql(query), *params))
                        for query, params in bound])

        return await self._tx(run, safe=safe) if bound else 0

    # -- what PostgreSQL does its own way --------------------------------------------------

    async def merge_job_options(self, job_id: int, patch: dict[str, Any]) -> None:
        await self._write("merge_job_options",
                          (json.dumps(patch, ensure_ascii=False), time.time(), job_id))

    async def acquire_shards(self, owner: str, wanted: Iterable[int], *,
                             lease_seconds: float) -> set[int]:
        ids = sorted(set(wanted))
        if not ids:
            return set()
        now = time.time()
        rows = await self._all("acquire_shards", (ids, owner, now + lease_seconds, now))
        return {int(r[0]) for r in rows}

    async def finish_import(self) -> None:
        await self._all("advance_identities")

    # -- bulk inserts: shards and tagsets created first, in statements of their own --------

    async def _resolve_shards(self, shards: Iterable[Shard]) -> dict[Shard, int]:
        """Ids of these shards, creating those that are new (committed at once, outside any
        item transaction: ids handed out stay valid whatever happens next)."""
        wanted = list(dict.fromkeys(shards))
        ids = {s: self._shard_ids[s] for s in wanted if s in self._shard_ids}
        missing = [s for s in wanted if s not in ids]
        for _ in range(3):  # a row inserted by another writer meanwhile shows up next time
            if not missing:
                return ids
            for i in range(0, len(missing), RESOLVE_CHUNK):
                part = missing[i:i + RESOLVE_CHUNK]
                rows = await self._all("upsert_shards", (
                    [s.partition for s in part], [s.account for s in part],
                    [s.region for s in part]))
                for r in rows:
                    shard = Shard(r["partition"], r["account"], r["region"])
                    ids[shard] = int(r["id"])
                    self._remember_shard(int(r["id"]), shard)
            missing = [s for s in missing if s not in ids]
        if missing:
            raise StoreError(f"could not create shard {missing[0]} in {self.location}")
        return ids

    async def _resolve_tagsets(self, bodies: Iterable[str]) -> dict[str, int]:
        """Ids of these tagset bodies (sha256 digest identity), creating the new ones."""
        ids: dict[str, int] = {}
        missing: dict[str, str] = {}  # digest -> body
        for body in bodies:
            if body in ids:
                continue
            tid = self._tagset_ids.get(body)
            if tid is not None:
                ids[body] = tid
            else:
                missing[hashlib.sha256(body.encode()).hexdigest()] = body
        for _ in range(3):
            if not missing:
                return ids
            digests = list(missing)
            for i in range(0, len(digests), RESOLVE_CHUNK):
                part = digests[i:i + RESOLVE_CHUNK]
                rows = await self._all("upsert_tagsets",
                                       (part, [missing[d] for d in part]))
                for r in rows:
                    found = missing.get(r["digest"])
                    if found is not None:
                        ids[found] = int(r["id"])
                        self._remember_tagset(int(r["id"]), found)
            missing = {d: b for d, b in missing.items() if b not in ids}
        if missing:
            raise StoreError(f"could not create a tagset in {self.location}")
        return ids

    async def _item_ids(self, items: Sequence[NewItem]
                        ) -> tuple[dict[Shard, int], dict[str, int]]:
        """The ids of the valid items' shards and tagsets, made where missing."""
        shard_ids = await self._resolve_shards(
            it.shard for it in items if _valid(it) and it.shard is not None)
        tagset_ids = await self._resolve_tagsets(
            it.tagset for it in items if _valid(it) and it.tagset is not None)
        return shard_ids, tagset_ids

    async def _add_items(self, job_id: int, items: Sequence[NewItem], now: float) -> int:
        """Chunks of INSERT … SELECT FROM unnest(arrays) in one transaction; ids follow the
        input order. Counters are kept by the insert trigger (one aggregate per chunk)."""
        shard_ids, tagset_ids = await self._item_ids(items)

        def arrays(chunk: Sequence[NewItem]) -> tuple[list[Any], ...]:
            cols: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [])
            arn, shard, tagset, state, line, code, message, finished, route = cols
            for it in chunk:
                arn.append(it.arn)
                line.append(it.line)
                route.append(it.route)
                if _valid(it):
                    assert it.shard is not None and it.tagset is not None
                    shard.append(shard_ids[it.shard])
                    tagset.append(tagset_ids[it.tagset])
                    state.append("pending")
                    code.append(None)
                    message.append(None)
                    finished.append(None)
                else:
                    shard.append(0)
                    tagset.append(0)
                    state.append("invalid")
                    code.append("InvalidInput")
                    message.append(it.problem)
                    finished.append(now)
            return cols

        async def run(con: Any) -> int:
            added = 0
            for i in range(0, len(items), ADD_CHUNK):
                status = await con.execute(Q["insert_items"], job_id,
                                           *arrays(items[i:i + ADD_CHUNK]))
                added += _rowcount(status)
            return added

        # Safe to repeat: a chunk that landed before the connection broke is ignored the
        # second time (the returned count then misses it).
        return await self._tx(run)

    def loader(self, job_id: int) -> _Loader:
        return _Loader(self, job_id)

    async def _import_items(self, records: Sequence[ItemRecord]) -> int:
        shard_ids = await self._resolve_shards(r.shard for r in records if r.shard is not None)
        tagset_ids = await self._resolve_tagsets(
            r.tagset for r in records if r.tagset is not None)
        cols: tuple[list[Any], ...] = tuple([] for _ in range(19))
        for r in records:
            row = (r.id, r.job_id, r.arn, shard_ids[r.shard] if r.shard is not None else 0,
                   tagset_ids[r.tagset] if r.tagset is not None else 0, str(r.state),
                   r.attempts, r.next_attempt_at, r.lease_owner, r.lease_expires_at,
                   r.error_code, r.http_status, r.message, r.finished_at, r.line, r.verified_at,
                   r.drift, r.before, r.route)
            for col, value in zip(cols, row, strict=True):
                col.append(value)
        return await self._write("import_items", cols, safe=False)
