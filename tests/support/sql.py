"""Reading a store behind its back: plain SQL through a connection of its own (sqlite3 or
asyncpg), so a test checks what is really stored rather than what the Store says."""

from __future__ import annotations

import sqlite3
from typing import Any

import asyncpg

from bulktag.store import is_postgres_url


def dialect(url: str) -> str:
    """"postgres" or "sqlite": the folder of migrations/ and queries for this store."""
    return "postgres" if is_postgres_url(url) else "sqlite"


async def plain_sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run `query` (`?` placeholders) through a separate plain connection, not the store's."""
    if is_postgres_url(url):
        parts = query.split("?")
        query = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1))
        con = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await con.fetch(query, *args)]
        finally:
            await con.close()
    with sqlite3.connect(url) as lite:
        return [tuple(r) for r in lite.execute(query, args).fetchall()]
