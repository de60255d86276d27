"""The PostgreSQL server tests create their databases on, and statements run on its maintenance
database. CI runs PostgreSQL: when it is not reachable, tests that need it FAIL, never skip (the
`pg_admin_url` fixture in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os
from urllib.parse import urlsplit, urlunsplit

#: The server (trust auth): $BULKTAG_TEST_PG, default postgres@127.0.0.1:5432.
PG_ADMIN_URL = os.environ.get("BULKTAG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_admin(url: str, *statements: str) -> None:
    """Run statements on the server's maintenance database, outside any transaction."""
    import asyncpg

    async def run() -> None:
        con = await asyncpg.connect(url, timeout=10)
        try:
            for statement in statements:
                await con.execute(statement)
        finally:
            await con.close()

    asyncio.run(run())


def pg_database_url(admin_url: str, database: str) -> str:
    """admin_url with its database replaced."""
    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))
