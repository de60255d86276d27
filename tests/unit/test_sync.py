"""Tag-sync rules that cannot work are refused before anything is stored, each with its reason
(`check_rule`): a tag and a query at once, a key without a value, nothing to apply, a bad
account, a query matching every resource, a bad rule name. Rules at work against the simulator,
through the CLI: tests/e2e/test_sync.py."""

from __future__ import annotations

import pytest

from bulktag.app.sync_rules import RuleError, check_rule

APPLIED = {"team": "web", "cc": "42"}


def test_rules_that_cannot_work_are_refused_with_the_reason() -> None:
    with pytest.raises(RuleError, match="not both"):
        check_rule("r", "k", "v", '{"Type": "TAG_FILTERS_1_0", "Query": "{}"}', APPLIED, [""], 60)
    with pytest.raises(RuleError, match="together"):
        check_rule("r", "k", None, None, APPLIED, [""], 60)
    with pytest.raises(RuleError, match="at least one"):
        check_rule("r", "k", "v", None, {}, [""], 60)
    with pytest.raises(RuleError, match="12-digit"):
        check_rule("r", "k", "v", None, APPLIED, ["123"], 60)
    with pytest.raises(ValueError, match="matches every resource"):
        check_rule("r", None, None, '{"Type": "TAG_FILTERS_1_0", "Query": "{}"}', APPLIED,
                   [""], 60)
    with pytest.raises(RuleError, match="rule name"):
        check_rule("bad name", "k", "v", None, APPLIED, [""], 60)
