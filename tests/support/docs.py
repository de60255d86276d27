"""The README's marked snippets: the doc test checks them and the e2e test runs them."""

from __future__ import annotations

import re

from tests.support import ROOT

README = ROOT / "README.md"
MARKER = "<!-- doc-test: {} -->"


def doc_block(name: str) -> str:
    """The fenced block right after `<!-- doc-test: NAME -->` in the README."""
    text = README.read_text()
    marker = MARKER.format(name)
    assert text.count(marker) == 1, f"README.md: {marker} should appear once"
    after = text.split(marker, 1)[1]
    m = re.match(r"\s*```sh\n(.*?)^```", after, re.MULTILINE | re.DOTALL)
    assert m, f"README.md: no ```sh block right after {marker}"
    return m.group(1)
