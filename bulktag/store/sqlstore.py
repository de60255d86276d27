"""What the two SQL backends share: every store operation written once over named queries.

`SqlStore` implements the contract (`base.py`) for any SQL dialect whose `sql/<dialect>.sql`
gives each query the same name and the same parameters in the same order (`$1` in PostgreSQL,
`?1` in SQLite). Its public methods do the bookkeeping once (times, row mappers, the shard and
tagset caches, paging, error translation) and reach the database only through a few primitives
a backend implements (saq's queue/base.py template methods; procrastinate's connector, which
only executes named queries):

- `_one`, `_all`, `_write`: one statement (a query's name, or SQL text for tests' checks);
- `_script`: several statements in one transaction, their row counts back;
- `_many`: statements over many rows in one transaction (executemany in SQLite, arrays bound
  once in PostgreSQL), each step's parameters a fixed head then one tuple per row;
- `_add_items`, `_import_items`, `acquire_shards`, `merge_job_options`: bulk inserts and the
  few operations whose SQL differs in shape, not only in spelling.

A backend keeps what truly differs: connecting, migrating, transactions, retries. Neither
backend imports the other; the helpers both need (query loading, migrations, pid check) are here.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from bulktag.arn import Shard
from bulktag.store.base import Store
from bulktag.store.models import (
    TERMINAL,
    ChangedItem,
    Claimed,
    Counts,
    Discovery,
    FleetRate,
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

#: one step of `_script`: (query, parameters)
Step = tuple[str, Sequence[Any]]
#: one step of `_many`: (query, parameters every row shares, one tuple per row)
RowsStep = tuple[str, Sequence[Any], Sequence[Sequence[Any]]]


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


def pid_alive(pid: int) -> bool:
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


def gone_from_this_host(owner: str) -> bool:
    """An owner token of a process of this host that no longer runs (one of another host
    cannot be told from here)."""
    owner_host, pid = owner_host_pid(owner)
    return owner_host == socket.gethostname() and bool(pid) and not pid_alive(pid)


class SqlStore(Store):
    """The contract over named queries; a backend supplies the primitives below."""

    #: the dialect's named queries (sql/<dialect>.sql)
    queries: ClassVar[dict[str, str]]
    #: what the driver raises when an insert meets a row with the same key
    unique_violation: ClassVar[type[Exception]]
    #: statements run first in the transactions that look leases up (release_owner, expired)
    lease_scan_setup: ClassVar[tuple[Step, ...]] = ()

    def __init__(self) -> None:
        self._shard_ids: dict[Shard, int] = {}
        self._shards_by_id: dict[int, Shard] = {}
        self._tagset_ids: dict[str, int] = {}
        self._tagsets_by_id: dict[int, str] = {}

    # -- the dialect's primitives ----------------------------------------------------------

    def _sql(self, query: str) -> str:
        """A query's text by name; anything else is SQL already (tests' own checks)."""
        return self.queries.get(query, query)

    @abc.abstractmethod
    async def _one(self, query: str, params: Sequence[Any] = (), *, safe: bool = True) -> Any:
        """The first row of one statement, or None. `safe`: the statement may be repeated
        after a lost connection (a backend that retries honours it)."""

    @abc.abstractmethod
    async def _all(self, query: str, params: Sequence[Any] = ()) -> list[Any]: ...

    @abc.abstractmethod
    async def _write(self, query: str, params: Sequence[Any] = (), *,
                     safe: bool = True) -> int:
        """Rows one statement touched."""

    @abc.abstractmethod
    async def _script(self, steps: Sequence[Step]) -> list[int]:
        """Statements in one transaction (one alone may run without); rows each touched."""

    @abc.abstractmethod
    async def _many(self, *steps: RowsStep, safe: bool = True) -> int:
        """Each step's statement over its rows, all in one transaction; steps without rows
        are passed over. Rows touched in all."""

    @abc.abstractmethod
    async def _add_items(self, job_id: int, items: Sequence[NewItem], now: float) -> int: ...

    @abc.abstractmethod
    async def _import_items(self, records: Sequence[ItemRecord]) -> int: ...

    def _id_list(self, ids: list[int]) -> Any:
        """A list of ids as one parameter (an array; SQLite overrides with JSON text)."""
        return ids

    def _text_list(self, texts: list[str]) -> Any:
        """A list of strings as one parameter (an array; SQLite overrides with JSON text)."""
        return texts

    # -- the shard and tagset caches -------------------------------------------------------

    def _remember_shard(self, sid: int, shard: Shard) -> None:
        self._shard_ids[shard] = sid
        self._shards_by_id[sid] = shard

    def _remember_tagset(self, tid: int, body: str) -> None:
        if len(self._tagset_ids) >= TAGSET_CACHE:
            # Per-row tags can make millions of tagsets: memory stays flat, not the cache.
            self._tagset_ids.clear()
            self._tagsets_by_id.clear()
        self._tagset_ids[body] = tid
        self._tagsets_by_id[tid] = body

    def _forget_ids(self) -> None:
        """Ids cached during a rolled-back transaction may not exist: forget them all."""
        self._shard_ids.clear()
        self._shards_by_id.clear()
        self._tagset_ids.clear()
        self._tagsets_by_id.clear()

    async def shard(self, shard_id: int) -> Shard:
        if shard_id not in self._shards_by_id:
            for row in await self._all("all_shards"):
                self._remember_shard(int(row["id"]),
                                     Shard(row["partition"], row["account"], row["region"]))
        return self._shards_by_id[shard_id]

    async def tagset(self, tagset_id: int) -> str:
        body = self._tagsets_by_id.get(tagset_id)
        if body is None:
            row = await self._one("get_tagset", (tagset_id,))
            if row is None:
                raise StoreError(f"tagset {tagset_id} is missing from {self.location}")
            body = str(row[0])
            self._remember_tagset(tagset_id, body)
        return body

    # -- jobs ------------------------------------------------------------------------------

    async def create_job(self, operation: str, *, options: JobOptions, name: str | None = None,
                         priority: int = 0, owner: str | None = None) -> int:
        row = await self._one(
            "create_job", (name, operation, priority, options.to_json(), owner, time.time()),
            safe=False)
        return int(row[0])

    async def get_job(self, job_id: int) -> Job | None:
        row = await self._one("get_job", (job_id,))
        return _job(row) if row else None

    async def list_jobs(self) -> list[Job]:
        return [_job(r) for r in await self._all("list_jobs")]

    async def set_job_state(self, job_id: int, state: JobState,
                            reason: str | None = None) -> None:
        await self._write("set_job_state", (str(state), time.time(), reason, job_id))

    async def set_job_priority(self, job_id: int, priority: int) -> None:
        await self._write("set_job_priority", (priority, time.time(), job_id))

    async def set_job_rate(self, job_id: int, rate: float) -> None:
        await self._write("set_job_rate", (rate, job_id))

    async def delete_job(self, job_id: int) -> None:
        await self._script([(name, (job_id,)) for name in (
            "delete_job_items", "delete_job", "delete_job_counts", "delete_job_error_counts",
            "delete_job_discoveries", "delete_job_paused_accounts", "delete_job_samples")])

    async def start_loading(self, job_id: int, loader: str, loaded: int,
                            digests: str | None = None) -> bool:
        return await self._write("start_loading",
                                 (job_id, loader, loaded, time.time(), digests)) > 0

    async def continue_loading(self, job_id: int, loader: str, previous: str) -> bool:
        return await self._write("continue_loading",
                                 (job_id, loader, time.time(), previous)) > 0

    async def pause_load(self, job_id: int, loader: str, reason: str) -> bool:
        return await self._write("pause_load", (job_id, loader, reason, time.time())) > 0

    async def note_loaded(self, job_id: int, loader: str, loaded: int | None,
                          digests: str | None = None) -> bool:
        return await self._write("note_loaded",
                                 (job_id, loader, loaded, time.time(), digests)) > 0

    async def finish_loading(self, job_id: int, loader: str, loaded: int) -> bool:
        return await self._write("finish_loading", (job_id, loader, loaded, time.time())) > 0

    async def reap_interrupted_loads(self, stale_seconds: float) -> list[int]:
        now = time.time()
        paused = []
        for row in await self._all("loading_jobs"):
            if gone_from_this_host(row["loading"] or "") or \
                    now - (row["loading_at"] or 0) > stale_seconds:
                reason = (f"its sources were not fully read: the submitting process "
                          f"({row['loading']}) stopped after {int(row['loaded']):,} rows; run "
                          "the same command again to continue this job, or cancel it")
                if await self._write("pause_interrupted_load", (
                        int(row["id"]), row["loading"], row["loading_at"], reason, now)):
                    paused.append(int(row["id"]))
        return paused

    async def reap_abandoned_submissions(self) -> list[int]:
        """Jobs left in `preparing` by a submitting process that died on this host."""
        removed = []
        for row in await self._all("stale_preparing"):
            if gone_from_this_host(row["owner"] or ""):
                await self.delete_job(int(row["id"]))
                removed.append(int(row["id"]))
        return removed

    # -- items -----------------------------------------------------------------------------

    async def add_items(self, job_id: int, items: Sequence[NewItem]) -> int:
        if not items:
            return 0
        try:
            return await self._add_items(job_id, items, time.time())
        except BaseException:
            self._forget_ids()
            raise

    async def first_rows(self, job_id: int, arns: Sequence[str]
                         ) -> dict[str, tuple[int | None, str | None]]:
        rows = await self._all("first_rows", (job_id, self._text_list(list(arns))))
        return {str(r[0]): (r[1], r[2]) for r in rows}

    async def counts(self, job_id: int) -> Counts:
        rows = await self._all("counts", (job_id,))
        return Counts({r[0]: int(r[1]) for r in rows if r[1]})

    async def shard_counts(self, job_id: int) -> dict[Shard | None, Counts]:
        out: dict[Shard | None, Counts] = {}
        for row in await self._all("shard_counts", (job_id,)):
            shard = await self.shard(int(row[0])) if row[0] else None
            out.setdefault(shard, Counts()).by_state[row[1]] = int(row[2])
        return out

    async def route_counts(self, job_id: int) -> dict[tuple[Shard | None, str], Counts]:
        out: dict[tuple[Shard | None, str], Counts] = {}
        for row in await self._all("route_counts", (job_id,)):
            shard = await self.shard(int(row[0])) if row[0] else None
            out.setdefault((shard, row[1]), Counts()).by_state[row[2]] = int(row[3])
        return out

    async def error_counts(self, job_id: int, limit: int = 5) -> list[tuple[str, int]]:
        return [(r[0], int(r[1])) for r in await self._all("error_counts", (job_id, limit))]

    async def error_example(self, job_id: int, code: str) -> tuple[str, int | None, str] | None:
        row = await self._one("error_example", (job_id, code))
        return (row[0], row[1], row[2]) if row else None

    async def last_failures(self, job_id: int, limit: int = 20) -> list[ReportRow]:
        return [ReportRow(*r) for r in await self._all("last_failures", (job_id, limit))]

    async def record_sample(self, job_id: int, at: float, done_total: int, *,
                            min_gap: float = 0.0) -> bool:
        return await self._write("record_sample", (job_id, at, done_total, min_gap)) > 0

    async def samples(self, job_id: int, since: float = 0.0) -> list[tuple[float, int]]:
        return [(float(r[0]), int(r[1])) for r in await self._all("samples", (job_id, since))]

    async def report_rows(self, job_id: int, *, unsuccessful_only: bool = False,
                          page: int = 5000) -> AsyncIterator[ReportRow]:
        query = "report_page_unsuccessful" if unsuccessful_only else "report_page"
        last = 0
        while True:
            rows = await self._all(query, (job_id, last, page))
            for row in rows:
                yield ReportRow(*row)
            if len(rows) < page:
                return
            last = int(rows[-1]["id"])

    async def succeeded_items(self, job_id: int,
                              page: int = 1000) -> AsyncIterator[list[SucceededItem]]:
        last = 0
        while True:
            rows = await self._all("succeeded_page", (job_id, last, page))
            if rows:
                yield [SucceededItem(*r) for r in rows]
            if len(rows) < page:
                return
            last = int(rows[-1]["id"])

    async def set_drift(self, results: Sequence[tuple[int, str | None]]) -> None:
        await self._many(("set_drift", (time.time(),), results))

    async def skip_items(self, job_id: int, skipped: Sequence[tuple[str, str]]) -> int:
        return await self._many(("skip_arns", (time.time(), job_id), skipped))

    async def retry_failed(self, job_id: int, code: str | None = None) -> int:
        if code is None:
            return await self._write("retry_failed", (job_id,))
        return await self._write("retry_failed_code", (job_id, code))

    async def cancel_items(self, job_id: int, message: str, *, code: str = "Cancelled") -> int:
        return await self._write("cancel_items", (time.time(), code, message, job_id))

    # -- work ------------------------------------------------------------------------------

    async def runnable(self) -> list[Runnable]:
        return [Runnable(int(r["job_id"]), int(r["shard_id"]), int(r["priority"]),
                         r["operation"], JobState(r["state"]), r["route"])
                for r in await self._all("runnable")]

    async def finished_jobs(self) -> list[int]:
        return [int(r[0]) for r in await self._all("unfinished_jobs")]

    async def claim(self, owner: str, job_id: int, shard_id: int, limit: int, *,
                    lease_seconds: float, now: float | None = None,
                    route: str | None = None) -> list[Claimed]:
        now = time.time() if now is None else now
        params: tuple[Any, ...] = (job_id, shard_id, now, limit, owner, now + lease_seconds)
        if route is None:
            rows = await self._all("claim", params)
        else:
            rows = await self._all("claim_route", (*params, route))
        return [Claimed(int(r[0]), r[1], int(r[2]), int(r[3]), before=r[4]) for r in rows]

    async def next_due(self, job_id: int, shard_id: int,
                       route: str | None = None) -> float | None:
        if route is None:
            row = await self._one("next_due", (job_id, shard_id))
        else:
            row = await self._one("next_due_route", (job_id, shard_id, route))
        return float(row[0]) if row and row[0] is not None else None

    async def set_route(self, job_id: int, route: str) -> int:
        return await self._write("set_route", (route, job_id))

    async def record(self, owner: str, outcomes: Sequence[Outcome]) -> int:
        now = time.time()
        return await self._many(("record", (owner,), [
            (o.item_id, str(o.state), o.attempts, o.next_attempt_at, o.error_code,
             o.http_status, o.message, now if o.state in TERMINAL else None)
            for o in outcomes]))

    async def keep_before(self, owner: str, befores: Sequence[tuple[int, str]]) -> int:
        return await self._many(("keep_before", (owner,), befores))

    async def changed_items(self, job_id: int, after_id: int, limit: int) -> list[ChangedItem]:
        return [ChangedItem(int(r[0]), r[1], Shard(r[2], r[3], r[4]), r[5], r[6])
                for r in await self._all("changed_page", (job_id, after_id, limit))]

    # -- owners and shard leases -----------------------------------------------------------

    async def _session_gone(self, owner: str) -> bool:
        """Whether `owner`'s session ended (never known where there is none)."""
        return False

    async def register_owner(self, owner: str) -> None:
        host, pid = owner_host_pid(owner)
        now = time.time()
        await self._write("register_owner", (owner, host, pid, now, now,
                                             self.session_ok() and self.session_generation > 0))

    async def heartbeat(self, owner: str) -> None:
        await self._write("heartbeat", (time.time(), owner))

    async def set_worker_rate(self, owner: str, job_id: int, rate: float) -> None:
        await self._write("set_worker_rate", (owner, job_id, rate, time.time()))

    async def fleet_rate(self, job_id: int, *, fresh_seconds: float,
                         stale_seconds: float) -> FleetRate:
        now = time.time()
        row = await self._one("fleet_rate", (job_id, now - fresh_seconds, now - stale_seconds))
        return FleetRate(float(row[0] or 0.0), int(row[1] or 0),
                         None if row[2] is None else float(row[2]))

    async def workers(self) -> list[Worker]:
        return [Worker(r[0], r[1], int(r[2]), float(r[3]), float(r[4]))
                for r in await self._all("workers")]

    async def release_owner(self, owner: str, *, forget: bool = True) -> int:
        steps: list[Step] = [*self.lease_scan_setup, ("release_owner", (owner,)),
                             ("release_discoveries", (owner,)), ("release_shards", (owner,))]
        if forget:
            steps += [("delete_owner", (owner,)), ("delete_worker_rates", (owner,))]
        return (await self._script(steps))[len(self.lease_scan_setup)]

    async def reap_dead_owners(self, *, stale_seconds: float, me: str | None = None) -> int:
        host = socket.gethostname()
        now = time.time()
        released = 0
        for row in await self._all("all_owners"):
            if row["owner"] == me:
                continue
            dead = (row["host"] == host and not pid_alive(int(row["pid"]))) or (
                row["heartbeat_at"] < now - stale_seconds) or \
                (bool(row["session"]) and await self._session_gone(row["owner"]))
            if dead:
                released += await self.release_owner(row["owner"])
        return released + (await self._script(
            [*self.lease_scan_setup, ("release_expired", (now,))]))[-1]

    async def release_shards(self, owner: str, shard_ids: Iterable[int] | None = None) -> None:
        if shard_ids is None:
            await self._write("release_shards", (owner,))
        else:
            await self._many(("release_some_shards", (owner,),
                              [(s,) for s in sorted(set(shard_ids))]))

    async def shard_holders(self) -> dict[int, tuple[str, float]]:
        return {int(r[0]): (str(r[1]), float(r[2]))
                for r in await self._all("shard_holders", (time.time(),))}

    # -- discovery -------------------------------------------------------------------------

    async def create_discoveries(self, job_id: int,
                                 pairs: Iterable[tuple[str, str, str]]) -> None:
        await self._many(("create_discoveries", (job_id, time.time()), list(pairs)))

    async def claim_discovery(self, owner: str, job_ids: set[int] | None) -> Discovery | None:
        row = await self._one("claim_discovery", (
            owner, time.time(), None if job_ids is None else self._id_list(sorted(job_ids))))
        return _discovery(row) if row else None

    async def save_discovery_page(self, d: Discovery, owner: str, token: str | None,
                                  found: int) -> None:
        now = time.time()
        await self._write("save_discovery_page", (token, now, found, now, d.id, owner),
                          safe=False)

    async def restart_discovery(self, d: Discovery) -> None:
        await self._write("restart_discovery", (time.time(), d.id), safe=False)

    async def finish_discovery(self, d: Discovery, state: str,
                               error: str | None = None) -> None:
        await self._write("finish_discovery", (state, error, time.time(), d.id))

    async def job_discoveries(self, job_id: int) -> list[Discovery]:
        return [_discovery(r) for r in await self._all("job_discoveries", (job_id,))]

    # -- paused accounts -------------------------------------------------------------------

    async def pause_account(self, job_id: int, account: str, reason: str) -> bool:
        return await self._write("pause_account", (job_id, account, reason, time.time())) > 0

    async def paused_accounts(self, job_id: int) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in await self._all("paused_accounts", (job_id,))]

    async def clear_paused_accounts(self, job_id: int) -> int:
        return await self._write("clear_paused_accounts", (job_id,))

    # -- tag-sync rules --------------------------------------------------------------------

    async def add_sync_rule(self, rule: NewSyncRule) -> SyncRule:
        try:
            await self._one("sync_insert_rule", (
                rule.name, rule.tag_key, rule.tag_value, rule.resource_query,
                json.dumps(rule.apply, sort_keys=True, ensure_ascii=False),
                json.dumps(list(rule.regions)), json.dumps(list(rule.accounts) or [""]),
                rule.interval, time.time(),
                json.dumps(rule.way_in) if rule.way_in else None), safe=False)
        except self.unique_violation:
            raise KeyError(rule.name) from None
        added = await self.get_sync_rule(rule.name)
        assert added is not None
        return added

    async def get_sync_rule(self, name: str) -> SyncRule | None:
        row = await self._one("sync_get_rule", (name,))
        return _sync_rule(row) if row else None

    async def list_sync_rules(self) -> list[SyncRule]:
        return [_sync_rule(r) for r in await self._all("sync_list_rules")]

    async def remove_sync_rule(self, rule: SyncRule) -> None:
        await self._script([("sync_delete_members", (rule.id,)),
                            ("sync_delete_rule", (rule.id,))])

    async def due_sync_rules(self, now: float) -> list[str]:
        return [r[0] for r in await self._all("sync_due_rules", (now,))]

    async def claim_sync_rule(self, name: str, *, force: bool = False) -> SyncRule | None:
        # Repeating a claim that landed finds the rule not due: the evaluation is skipped
        # until the next interval, never run twice.
        row = await self._one("sync_claim_now" if force else "sync_claim_due",
                              (name, time.time()))
        return _sync_rule(row) if row else None

    async def sync_member_arns(self, rule_id: int) -> list[str]:
        out: list[str] = []
        last, page = "", 5000
        while True:
            rows = await self._all("sync_members_page", (rule_id, last, page))
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
            # Distinct ARNs: one upsert statement may not touch a row twice (PostgreSQL).
            upsert = [(arn,) for arn in dict.fromkeys(seen[i:i + SYNC_CHUNK])]
            delete = [(arn,) for arn in gone[i:i + SYNC_CHUNK]]
            await self._many(("sync_upsert_members", (rule.id, body, digest, now), upsert),
                             ("sync_delete_members_arns", (rule.id,), delete))

    async def finish_sync_rule(self, rule: SyncRule, status: str, error: str | None,
                               added: int, removed: int, jobs: Sequence[int]) -> None:
        await self._write("sync_finish_rule", (status, error, time.time(), rule.id, added,
                                               removed, json.dumps(list(jobs))))

    # -- metrics ---------------------------------------------------------------------------

    async def totals(self) -> QueueTotals:
        items = {r[0]: int(r[1] or 0) for r in await self._all("metrics_items_by_state")}
        job_items = [(int(r[0]), r[1], str(r[2]), str(r[4]), int(r[5]))
                     for r in await self._all("metrics_active_job_items") if r[5]]
        jobs = {r[0]: int(r[1]) for r in await self._all("metrics_jobs_by_state")}
        rules = {r[0]: int(r[1]) for r in await self._all("sync_rule_status_counts")}
        return QueueTotals(items, job_items, jobs, rules)

    # -- moving a store --------------------------------------------------------------------
    # Imports insert explicit ids, so none is safe to repeat after it may have landed
    # (safe=False: a lost connection mid-write raises instead of inserting twice).

    async def lease_holders(self) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in await self._all("lease_holders")}

    async def import_job(self, job: Job) -> None:
        try:
            await self._write("import_job", (
                job.id, job.name, job.operation, str(job.state), job.priority,
                job.options.to_json(), job.created_at, job.started_at, job.finished_at,
                job.updated_at, job.rate, job.reason), safe=False)
        except self.unique_violation as exc:
            raise StoreError(f"cannot import job {job.id} into {self.location}: {exc}") from None

    async def export_items(self, after_id: int, limit: int,
                           job_id: int | None = None) -> list[ItemRecord]:
        if job_id is None:
            rows = await self._all("export_items", (after_id, limit))
        else:
            rows = await self._all("export_job_items", (job_id, after_id, limit))
        return [_item_record(r) for r in rows]

    async def import_items(self, records: Sequence[ItemRecord]) -> int:
        if not records:
            return 0
        try:
            return await self._import_items(records)
        except BaseException as exc:
            self._forget_ids()
            if isinstance(exc, self.unique_violation):
                raise StoreError(f"cannot import items {records[0].id}..{records[-1].id} into "
                                 f"{self.location}: {exc}") from None
            raise

    async def import_discoveries(self, records: Sequence[Discovery]) -> None:
        await self._many(("import_discoveries", (), [
            (d.id, d.job_id, d.partition, d.account, d.region, d.state, d.token, d.token_at,
             d.pages, d.found, d.restarts, d.error, d.updated_at) for d in records]), safe=False)

    async def export_paused_accounts(self, job_id: int) -> list[PausedAccount]:
        return [PausedAccount(r[0], r[1], float(r[2]))
                for r in await self._all("paused_accounts", (job_id,))]

    async def import_paused_accounts(self, job_id: int,
                                     accounts: Sequence[PausedAccount]) -> None:
        await self._many(("import_paused_accounts", (job_id,),
                          [(a.account, a.reason, a.paused_at) for a in accounts]), safe=False)

    async def import_sync_rule(self, rule: SyncRule) -> None:
        try:
            await self._write("import_sync_rule", (
                rule.id, rule.name, rule.tag_key, rule.tag_value, rule.resource_query,
                json.dumps(rule.apply, sort_keys=True, ensure_ascii=False),
                json.dumps(rule.regions), json.dumps(rule.accounts), rule.interval_seconds,
                rule.status, rule.error, rule.created_at, rule.last_run_at, rule.next_run_at,
                rule.members, rule.last_added, rule.last_removed, json.dumps(rule.last_jobs),
                json.dumps(rule.way_in) if rule.way_in else None),
                safe=False)
        except self.unique_violation as exc:
            raise StoreError(f"cannot import sync rule {rule.name!r} into {self.location}: "
                             f"{exc}") from None

    async def export_sync_members(self, rule_id: int, after_arn: str,
                                  limit: int) -> list[SyncMember]:
        return [SyncMember(r[0], r[1], r[2], float(r[3]))
                for r in await self._all("export_sync_members", (rule_id, after_arn, limit))]

    async def import_sync_members(self, rule_id: int, members: Sequence[SyncMember]) -> None:
        await self._many(("import_sync_members", (rule_id,), [
            (m.arn, m.applied, m.digest, m.last_seen_at) for m in members]), safe=False)


# -- rows to records (a row is read by index or by column name in both drivers) ---------------


def _item_record(row: Any) -> ItemRecord:
    shard = Shard(row[3], row[4], row[5]) if row[3] is not None else None
    return ItemRecord(
        id=int(row[0]), job_id=int(row[1]), arn=row[2], shard=shard, tagset=row[6],
        state=ItemState(row[7]), attempts=int(row[8]), next_attempt_at=float(row[9]),
        lease_owner=row[10], lease_expires_at=row[11], error_code=row[12],
        http_status=row[13], message=row[14], finished_at=row[15],
        line=None if row[16] is None else int(row[16]), verified_at=row[17], drift=row[18],
        before=row[19], route=row[20])


def _job(row: Any) -> Job:
    return Job(
        id=int(row["id"]), name=row["name"], operation=row["operation"],
        state=JobState(row["state"]), priority=int(row["priority"]),
        options=JobOptions.from_json(row["options"]), created_at=row["created_at"],
        started_at=row["started_at"], finished_at=row["finished_at"],
        updated_at=row["updated_at"], rate=row["rate"], reason=row["reason"],
        loading=row["loading"], loaded=int(row["loaded"]), loading_at=row["loading_at"],
        loaded_digests=row["loaded_digests"],
    )


def _discovery(row: Any) -> Discovery:
    return Discovery(int(row["id"]), int(row["job_id"]), row["partition"], row["account"],
                     row["region"], row["state"], row["token"], row["token_at"],
                     int(row["pages"]), int(row["found"]), int(row["restarts"]), row["error"],
                     row["updated_at"])


def _sync_rule(row: Any) -> SyncRule:
    return SyncRule(int(row["id"]), row["name"], row["tag_key"], row["tag_value"],
                    row["resource_query"], json.loads(row["apply_tags"]),
                    json.loads(row["regions"]), json.loads(row["accounts"]),
                    row["interval_seconds"], row["status"], row["error"], row["created_at"],
                    row["last_run_at"], row["next_run_at"], int(row["members"]),
                    int(row["last_added"]), int(row["last_removed"]),
                    json.loads(row["last_jobs"]),
                    json.loads(row["way_in"]) if row["way_in"] else None)
