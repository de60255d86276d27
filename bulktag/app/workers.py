"""The workers of a store, for `bulktag workers`: who is working the queue, on which host, since
when, how recently it said so, and which shards (account, region) it drives.

Design notes: read only through the store contract (`workers()`, `shard_holders()`,
`shard(id)`), so it answers the same on SQLite and PostgreSQL and never touches items. A worker
is *stale* when its heartbeat is older than `owner_stale_seconds`, and (PostgreSQL) *gone* when
its database session ended (the process died, or its host's connections were dropped): the next
worker to reap releases its leases either way, so its shards are about to change hands. `live`
is neither. A shard lease held by an owner
that never registered (or was already forgotten) is listed under that owner with
`registered: false`, so no live lease goes unseen.
"""

from __future__ import annotations

import time
from typing import Any

from bulktag.config import Settings
from bulktag.store import Store
from bulktag.store.models import owner_host_pid


async def list_workers(store: Store, settings: Settings, *,
                       now: float | None = None) -> list[dict[str, Any]]:
    """One dict per worker, oldest first: owner, host, pid, started_at, heartbeat_at,
    heartbeat_age (seconds), stale, registered, and shards [{shard_id, partition, account,
    region, expires_at}] sorted by account and region."""
    now = time.time() if now is None else now
    held: dict[str, list[dict[str, Any]]] = {}
    for shard_id, (owner, expires) in (await store.shard_holders()).items():
        shard = await store.shard(shard_id)
        held.setdefault(owner, []).append({
            "shard_id": shard_id, "partition": shard.partition, "account": shard.account,
            "region": shard.region, "expires_at": expires})
    out: list[dict[str, Any]] = []
    for w in await store.workers():
        age = max(0.0, now - w.heartbeat_at)
        session = await store.session_alive(w.owner)
        stale = age > settings.owner_stale_seconds
        out.append({"owner": w.owner, "host": w.host, "pid": w.pid,
                    "started_at": w.started_at, "heartbeat_at": w.heartbeat_at,
                    "heartbeat_age": round(age, 3),
                    "stale": stale, "registered": True,
                    # PostgreSQL: its session is up (None where there are no sessions)
                    "session": session, "live": not stale and session is not False,
                    "shards": _sorted(held.pop(w.owner, []))})
    for owner, shards in sorted(held.items()):
        host, pid = owner_host_pid(owner)
        out.append({"owner": owner, "host": host, "pid": pid, "started_at": None,
                    "heartbeat_at": None, "heartbeat_age": None, "stale": False,
                    "registered": False, "session": None, "live": False,
                    "shards": _sorted(shards)})
    return out


def _sorted(shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(shards, key=lambda s: (s["partition"], s["account"], s["region"]))


def render_workers(workers: list[dict[str, Any]]) -> str:
    """The human table of `bulktag workers`."""
    if not workers:
        return "no workers"
    lines = []
    for w in workers:
        if w["registered"]:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(w["started_at"]))
            beat = f"heartbeat {w['heartbeat_age']:.1f}s ago" + (" STALE" if w["stale"] else "") \
                + (" SESSION GONE" if w["session"] is False else "")
        else:
            started, beat = "?", "not registered"
        lines.append(f"{w['owner']}  host {w['host']} pid {w['pid']}  started {started}  "
                     f"{beat}  shards {len(w['shards'])}")
        for s in w["shards"]:
            lines.append(f"    {s['account'] or '(caller)'}/{s['region']}"
                         + (f" ({s['partition']})" if s["partition"] != "aws" else ""))
    return "\n".join(lines)
