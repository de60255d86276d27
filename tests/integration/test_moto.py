"""moto's server (`python -m moto.server`, the module-scoped `moto` fixture of tests/conftest.py)
holds the resources the interop tests start from, with their initial env tags, read back through
the owning services' APIs. The CLI against it, and what moto supports: tests/e2e/test_moto.py."""

from __future__ import annotations

import pytest

from tests.support.moto import REGIONS, Moto

pytestmark = pytest.mark.slow


def test_moto_resources_are_there_with_their_initial_tags(moto: Moto) -> None:
    assert len(moto.arns) == 3 * 3 * len(REGIONS)
    for name, arn in moto.arns.items():
        assert moto.tags(arn).get("env", "") == moto.env[name], name
