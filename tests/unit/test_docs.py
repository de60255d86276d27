"""The documentation names only what exists: every `bulktag COMMAND` in README.md, docs/*.md and
benchmarks/README.md answers `--help`, every repository path they name exists, every relative
link (and its #anchor) resolves, every `bulktag.module.name` imports, every `bulktag_*` metric is
one the code defines. The README's quick start is the two commands `.ci/run` runs, and the
snippets that tests/e2e/test_readme_simulator.py runs are where it looks for them.

In-process and fast: a renamed command, a moved file or a dropped heading fails it.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulktag.cli.main import build_parser, main
from tests.support.docs import doc_block

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
CHECKED = [README, *DOCS, ROOT / "benchmarks" / "README.md"]

#: the README stays a user's page (the issue: "README ≤ ~350 lines")
README_MAX_LINES = 350

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`]+)`")
#: `bulktag` as a command word: after a space, a slash (.venv/bin/bulktag) or the line's start;
#: not in `--owner=bulktag`, `bulktag-sim`, `bulktag.service` or `/opt/bulktag/venv`
COMMAND = re.compile(r"(?<![\w.=@:-])bulktag[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?")
#: repository paths: top-level folders of this repository, not inside another path or URL
PATH = re.compile(r"(?<![\w./~$:@-])((?:benchmarks|bulktag|config|deploy|docs|migrations|tests"
                  r"|\.ci)/[\w./-]*)")
#: paths the docs name that a run creates, git-ignored (checked against .gitignore below)
GENERATED = {"benchmarks/out/"}
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOTTED = re.compile(r"^bulktag(?:\.\w+)+$")
METRIC = re.compile(r"\bbulktag_[a-z_]*[a-z]\b")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def without_fences(text: str) -> str:
    return FENCE.sub("", text)


def code_of(text: str) -> Iterator[str]:
    """Every fenced block and every inline code span (which may wrap a line)."""
    for block in FENCE.finditer(text):
        yield block.group(1)
    for span in INLINE.findall(without_fences(text)):
        yield " ".join(span.split())  # a span wrapped over two lines reads as one


def commands_in(text: str) -> set[tuple[str, ...]]:
    """(command,) or (command, word): the word is checked as a subcommand where there is one."""
    found: set[tuple[str, ...]] = set()
    for code in code_of(text):
        for m in COMMAND.finditer(code):
            found.add((m.group(1),) if m.group(2) is None else (m.group(1), m.group(2)))
    return found


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_path(words: tuple[str, ...]) -> list[str]:
    """The argv that names the command: its subcommand too when it has subcommands. Fails the
    test, naming the command, when the CLI has no such command."""
    top = subcommands(build_parser())
    name = words[0]
    assert name in top, f"`bulktag {name}`: no such command (have {sorted(top)})"
    nested = subcommands(top[name])
    if nested and len(words) > 1:
        assert words[1] in nested, (f"`bulktag {name} {words[1]}`: no such subcommand "
                                    f"(have {sorted(nested)})")
        return [name, words[1]]
    return [name]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in without_fences(path.read_text()).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


ALL_COMMANDS = sorted({(rel(path), words) for path in CHECKED
                       for words in commands_in(path.read_text())})


def test_the_docs_name_commands() -> None:
    """The extraction works (else the parametrized test below would check nothing)."""
    named = {words[0] for _, words in ALL_COMMANDS}
    assert {"demo", "sim", "tag", "undo", "daemon", "inventory", "status"} <= named


@pytest.mark.parametrize(("doc", "words"), ALL_COMMANDS,
                         ids=[f"{doc}:{' '.join(w)}" for doc, w in ALL_COMMANDS])
def test_every_command_named_answers_help(doc: str, words: tuple[str, ...],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = command_path(words)
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0, f"{doc}: `bulktag {' '.join(argv)} --help` failed"
    assert f"usage: bulktag {' '.join(argv)}" in capsys.readouterr().out


@pytest.mark.parametrize("doc", CHECKED, ids=rel)
def test_every_path_named_exists(doc: Path) -> None:
    named = {m.rstrip(".,;:") for m in PATH.findall(doc.read_text())}
    missing = sorted(p for p in named - GENERATED if not (ROOT / p).exists())
    assert not missing, f"{rel(doc)} names paths that do not exist: {missing}"


def test_generated_paths_are_ignored_by_git() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert sorted(GENERATED) == sorted(p for p in GENERATED if p in ignored)


@pytest.mark.parametrize("doc", CHECKED, ids=rel)
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in LINK.findall(without_fences(doc.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{rel(doc)}: links that lead nowhere: {broken}"


@pytest.mark.parametrize("doc", CHECKED, ids=rel)
def test_every_dotted_name_imports(doc: Path) -> None:
    for code in INLINE.findall(without_fences(doc.read_text())):
        if not DOTTED.match(code):
            continue
        parts = code.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj: object = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attr in parts[cut:]:
                assert hasattr(obj, attr), f"{rel(doc)}: `{code}`: no {attr!r}"
                obj = getattr(obj, attr)
            break
        else:
            pytest.fail(f"{rel(doc)}: `{code}` names no module")


def test_every_metric_named_is_defined() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "bulktag").rglob("*.py"))
    named = {m for doc in CHECKED for m in METRIC.findall(doc.read_text())}
    assert "bulktag_queue_depth" in named
    unknown = sorted(m for m in named if f'"{m}"' not in source)
    assert not unknown, f"metrics the docs name but the code does not define: {unknown}"


def test_the_quick_start_is_what_ci_runs() -> None:
    """Exactly two set-up commands, identical to the ones .ci/run runs after its labels."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    runs = [ci[i + 1].strip() for i, line in enumerate(ci) if "== quick start" in line]
    assert len(runs) == 2, runs
    section = README.read_text().split("## Quick start", 1)[1]
    block = FENCE.search(section)
    assert block, "README.md: no code block under Quick start"
    assert block.group(1).strip().splitlines() == runs


def test_the_readme_stays_short_and_links_every_doc() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    unlinked = [rel(d) for d in DOCS if f"]({rel(d)}" not in text]
    assert not unlinked, f"docs the README does not link: {unlinked}"


@pytest.mark.parametrize("name", ["simulator", "own-job", "dashboard"])
def test_the_snippets_the_e2e_test_runs_are_there(name: str) -> None:
    block = doc_block(name)
    assert ".venv/bin/bulktag" in block
