"""Helpers shared by the tests (ports, the CLI, waits, servers, counts), imported as
`tests.support.<module>`. Fixtures built on them live in tests/conftest.py.

A helper lives here as soon as a second test module needs it; a test module never imports
another one."""

from pathlib import Path

#: The repository's checkout: migrations/, docs/ and the package sit under it.
ROOT = Path(__file__).resolve().parents[2]
