"""The layers of ARCHITECTURE.md, kept true: every import between bulktag's modules points down
(or sideways within a layer), no import cycle between modules (type-only imports count for
both), nothing outside the store package
sees SQL or a store's private parts, nothing outside the engine its private attributes, and the
simulator imports nothing of bulktag."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "bulktag"

# Top to bottom, by package; a module may import its own layer and the layers below it. The
# modules at the top of `bulktag/` are the foundation (settings, logs, sources, errors, ARNs,
# the API's limits): everything may use them, and they use only each other.
LAYERS: list[tuple[str, set[str]]] = [
    ("front ends", {"cli", "web", "__main__"}),
    ("application", {"app"}),
    ("engine", {"engine"}),
    ("aws", {"aws"}),
    ("policy", {"policy"}),
    ("store", {"store"}),
    ("foundation", {p.stem for p in ROOT.glob("*.py") if p.stem != "__main__"}),
]
LAYER_OF = {name: n for n, (_, names) in enumerate(LAYERS) for name in names}
PACKAGES = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}


def modules() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.py")):
        if "sim" not in path.relative_to(ROOT).parts[:1]:
            yield path


def top_name(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def dotted(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Iterator[str]:
    """Absolute names of bulktag modules `path` imports, at run time or for types only (under
    TYPE_CHECKING): a type-only import is still a dependency, and a cycle through one is an
    import circle that `from __future__ import annotations` merely hides."""
    tree = ast.parse(path.read_text())
    package = dotted(path) if path.name == "__init__.py" else dotted(path).rsplit(".", 1)[0]

    def visit(node: ast.AST) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    name = ".".join([*base, child.module] if child.module else base)
                else:
                    name = child.module or ""
                if name.startswith("bulktag"):
                    yield name
                    for alias in child.names:  # `from . import x` may name a module
                        yield f"{name}.{alias.name}"
            elif isinstance(child, ast.Import):
                yield from (a.name for a in child.names if a.name.startswith("bulktag"))
            yield from visit(child)

    yield from visit(tree)


def first_level(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) < 2:
        return "__init__"
    candidate = parts[1]
    if (ROOT / f"{candidate}.py").exists() or (ROOT / candidate).is_dir():
        return candidate
    return None


def test_every_module_has_a_layer() -> None:
    missing = {top_name(p) for p in modules()} - set(LAYER_OF)
    assert not missing, f"add these to LAYERS and ARCHITECTURE.md: {sorted(missing)}"


def test_imports_point_down() -> None:
    wrong = []
    for path in modules():
        here = top_name(path)
        for name in imports_of(path):
            there = first_level(name)
            if there is None or there == here or there == "sim":
                continue
            if LAYER_OF[there] < LAYER_OF[here]:
                wrong.append(f"{path.relative_to(ROOT.parent)} ({LAYERS[LAYER_OF[here]][0]}) "
                             f"imports {name} ({LAYERS[LAYER_OF[there]][0]})")
    assert not wrong, "imports pointing up:\n" + "\n".join(wrong)


def test_no_import_cycles_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    known = {dotted(p) for p in modules()}
    for path in modules():
        graph[dotted(path)] = {n for n in imports_of(path) if n in known} - {dotted(path)}
    # A package's __init__ re-exporting its own modules is not a cycle of concern.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state:
                found = walk(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = walk(node)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_sql_and_store_internals_stay_in_the_store() -> None:
    offenders = []
    for path in modules():
        if top_name(path) == "store":
            continue
        text = path.read_text()
        for needle in ("aiosqlite", "asyncpg", "import sqlite3", "store._one(", "store._all(",
                       "store._write(",
                       "store.db", "store.transaction()", "Q["):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT.parent)}: {needle}")
    assert not offenders, "\n".join(offenders)


def test_nothing_outside_the_engine_reads_its_private_attributes() -> None:
    offenders = []
    for path in modules():
        if top_name(path) == "engine":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "engine._" in line:
                offenders.append(f"{path.relative_to(ROOT.parent)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_simulator_imports_nothing_else_of_bulktag() -> None:
    for path in sorted((ROOT / "sim").rglob("*.py")):
        for name in imports_of(path):
            assert name.startswith("bulktag.sim"), f"{path}: imports {name}"


def architecture_rows() -> list[tuple[str, str, set[str]]]:
    """(layer, package, modules named) of ARCHITECTURE.md's layers table."""
    text = (ROOT.parent / "ARCHITECTURE.md").read_text()
    section = text.split("## Layers, top to bottom", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[2].startswith("`"):
            continue
        named = {n for n in cells[2].replace("`", "").replace(" ", "").split(",") if n}
        rows.append((cells[0], cells[1].strip("`"), named))
    return rows


def files_of(package: str) -> set[str]:
    folder = ROOT if package == "(top)" else ROOT / package.rstrip("/")
    names = {p.name for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    names |= {f"{p.name}/" for p in folder.iterdir()
              if p.is_dir() and p.name not in ("__pycache__", "templates")
              and (package != "(top)" or not (p / "__init__.py").exists())}
    return names


def test_architecture_md_names_every_module_of_every_package() -> None:
    rows = architecture_rows()
    assert rows, "ARCHITECTURE.md has no layers table"
    drift = []
    for _, package, named in rows:
        actual = files_of(package)
        if named != actual:
            drift.append(f"{package}: missing from the table {sorted(actual - named)}, "
                         f"named but absent {sorted(named - actual)}")
    assert not drift, "ARCHITECTURE.md's layers table has drifted:\n" + "\n".join(drift)


def test_architecture_md_layers_are_the_tested_layers_in_order() -> None:
    rows = architecture_rows()
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()} - {"sim"}
    assert {pkg.rstrip("/") for _, pkg, _ in rows} == packages | {"(top)"}
    for _, package, _ in rows:
        name = "errors" if package == "(top)" else package.rstrip("/")
        assert name in LAYER_OF, f"{package} is in ARCHITECTURE.md but has no layer here"
    order = [LAYER_OF["errors" if pkg == "(top)" else pkg.rstrip("/")] for _, pkg, _ in rows]
    assert order == sorted(order), "ARCHITECTURE.md lists the layers out of order"
    names = [LAYERS[n][0] for n in order]
    assert [layer.lower() for layer, _, _ in rows] == [n.lower() for n in names]


# Only aws/ talks to AWS: botocore's and aiohttp's clients stay behind it. bulktag/web/ serves
# HTTP with aiohttp's server, which is not a client of anything.
AWS_LIBRARIES = ("aiobotocore", "botocore", "boto3", "aiohttp")
SERVER_ONLY = {"web": {"aiohttp.web"}}


def all_imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute name) of everything `path` imports: at the top, inside functions and
    under TYPE_CHECKING alike; `from a import b` gives `a.b` (b may be a module)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def test_only_aws_imports_the_aws_and_http_client_libraries() -> None:
    # The walk sees the imports inside functions too (s3.py imports aiobotocore in one).
    seen = {name for _, name in all_imports_of(ROOT / "aws" / "s3.py")}
    assert "aiobotocore.session.AioSession" in seen
    offenders = []
    for path in modules():
        here = top_name(path)
        if here == "aws":
            continue
        for line, name in all_imports_of(path):
            if name.split(".")[0] not in AWS_LIBRARIES:
                continue
            if any(name == ok or name.startswith(ok + ".") for ok in SERVER_ONLY.get(here, ())):
                continue
            offenders.append(f"{path.relative_to(ROOT.parent)}:{line}: {name}")
    assert not offenders, "only bulktag/aws/ may import these:\n" + "\n".join(offenders)
