"""The shared SQL store (`bulktag/store/sqlstore.py`) runs each operation once for both dialects
by query name: every name it uses exists in both `sql/*.sql` files with as many parameters in
each, and neither backend imports the other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from bulktag.store.sqlstore import load_queries

STORE = Path(__file__).resolve().parents[2] / "bulktag" / "store"
DIALECTS = ("sqlite", "postgres")


def parameters(dialect: str, sql: str) -> int | None:
    """How many positional parameters a query takes; None for SQLite's named (:name) ones."""
    sql = re.sub(r"'[^']*'", "''", sql)  # not inside string literals
    if dialect == "postgres":
        return max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)
    if re.search(r"(?<![:\w]):[a-z_]+", sql):
        return None
    numbered = [int(n) for n in re.findall(r"\?(\d+)", sql)]
    return max(numbered) if numbered else sql.count("?")


def shared_names() -> set[str]:
    """The string constants of sqlstore.py that name a query of either dialect."""
    known = set(load_queries("sqlite")) | set(load_queries("postgres"))
    tree = ast.parse((STORE / "sqlstore.py").read_text())
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in known}


def test_every_query_the_shared_store_runs_exists_in_both_dialects() -> None:
    names = shared_names()
    assert len(names) > 50  # the scan found them
    for dialect in DIALECTS:
        missing = names - set(load_queries(dialect))
        assert not missing, f"sql/{dialect}.sql lacks {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(shared_names()))
def test_a_shared_query_takes_as_many_parameters_in_both_dialects(name: str) -> None:
    counts = {d: parameters(d, load_queries(d)[name]) for d in DIALECTS}
    assert counts["sqlite"] == counts["postgres"], f"{name}: {counts}"


def test_no_backend_imports_the_other() -> None:
    for module, other in (("sqlite", "postgres"), ("postgres", "sqlite")):
        tree = ast.parse((STORE / f"{module}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert f"bulktag.store.{other}" not in imported, f"{module}.py imports {other}.py"
