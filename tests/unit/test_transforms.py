"""Transform operations as pure rules (`policy/transforms.py`) and how a job decides one
resource with them (`changes.decide`): each operation, each conflict rule, the guardrails,
parsing refusals, and — for any tags and any operations (hypothesis) — that undo's body made
from the before-image puts back exactly the tags the resource had."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulktag.policy import transforms as tf
from bulktag.policy.changes import CASE_CONFLICT_CODE, Rules, decide, encode, undo_body

RULES = Rules(kind="transform", skip_compliant=True)
OVERWRITE = Rules(kind="transform", skip_compliant=True, on_conflict="overwrite")


def body(*ops: tf.Op) -> list[list[object]]:
    return json.loads(tf.to_json(ops))  # type: ignore[no-any-return]


def test_rename_moves_the_value_and_removes_the_old_key() -> None:
    d = decide(RULES, body(tf.rename("cost-center=CostCenter")), {"cost-center": "a", "x": "1"})
    assert d.send and d.override == {"CostCenter": "a", "cost-center": None}
    assert d.before == {"CostCenter": None, "cost-center": "a"}
    assert d.after == {"CostCenter": "a", "cost-center": None}


def test_a_resource_without_the_source_key_gets_no_call() -> None:
    d = decide(RULES, body(tf.rename("cost-center=CostCenter")), {"Owner": "me"})
    assert not d.send and d.already and d.code is None


def test_a_different_destination_is_a_conflict_skipped_naming_both_values() -> None:
    tags = {"cost-center": "a", "CostCenter": "b"}
    d = decide(RULES, body(tf.rename("cost-center=CostCenter")), tags)
    assert not d.send and d.code == tf.CONFLICT_CODE
    assert "CostCenter is 'b'" in (d.reason or "") and "cost-center is 'a'" in (d.reason or "")
    over = decide(OVERWRITE, body(tf.rename("cost-center=CostCenter")), tags)
    assert over.send and over.override == {"CostCenter": "a", "cost-center": None}
    # the same value already there: no conflict, only the old key goes
    same = decide(RULES, body(tf.rename("cost-center=CostCenter")),
                  {"cost-center": "a", "CostCenter": "a"})
    assert same.send and same.override == {"cost-center": None}


def test_copy_value_case_map_and_key_case() -> None:
    tags = {"Name": "web", "env": "Prod", "team": "old-team"}
    d = decide(RULES, body(tf.copy("Name=Application"), tf.value_case("env=lower"),
                           tf.map_value("team:old-team=new-team")), tags)
    assert d.override == {"Application": "web", "env": "prod", "team": "new-team"}
    assert tf.apply([tf.value_case("k=title")], {"k": "hello world"}).tags == \
        {"k": "Hello World"}
    variants = {"costcenter": "1", "COSTCENTER": "1"}
    d = decide(RULES, body(tf.key_case("costcenter=CostCenter")), variants)
    assert d.override == {"CostCenter": "1", "costcenter": None, "COSTCENTER": None}
    clash = decide(RULES, body(tf.key_case("costcenter=CostCenter")),
                   {"costcenter": "1", "COSTCENTER": "2"})
    assert not clash.send and clash.code == tf.CONFLICT_CODE
    assert tf.apply([tf.key_case("costcenter=CostCenter")], {"costcenter": "1",
                    "COSTCENTER": "2"}, "overwrite").tags == {"CostCenter": "2"}  # sorted first


def test_operations_apply_in_the_order_given() -> None:
    ops = [tf.rename("a=b"), tf.value_case("b=upper")]
    assert tf.apply(ops, {"a": "x"}).tags == {"b": "X"}
    assert tf.apply(list(reversed(ops)), {"a": "x"}).tags == {"b": "x"}


def test_guardrails_on_the_result() -> None:
    many = {f"k{i}": "v" for i in range(50)}
    d = decide(RULES, body(tf.copy("k0=extra")), many)
    assert not d.send and d.failed and d.code == "TagLimitExceeded"
    # a new key differing only in case from one the resource keeps is refused ...
    d = decide(RULES, body(tf.copy("owner=Team")), {"owner": "a", "team": "b"})
    assert not d.send and d.code == CASE_CONFLICT_CODE
    # ... but not from one the same change removes
    assert decide(RULES, body(tf.key_case("owner=Owner")), {"owner": "a"}).send
    # IAM takes keys differing in case for one: removing the old would remove the new
    iam = decide(RULES, body(tf.key_case("owner=Owner")), {"owner": "a"},
                 case_insensitive=True)
    assert not iam.send and "IAM" in (iam.reason or "")


@pytest.mark.parametrize(("parse", "text", "words"), [
    (tf.rename, "a", "expects A=B"),
    (tf.rename, "a=a", "the new key is the old one"),
    (tf.rename, "aws:cloudformation:stack-name=Stack", "AWS's own tags cannot"),
    (tf.copy, "x=aws:x", "AWS's own tags cannot"),
    (tf.value_case, "k=camel", "must be one of lower, upper, title"),
    (tf.map_value, "k=v", "KEY:FROM=TO"),
    (tf.key_case, "costcenter=Owner", "not a case variant"),
])
def test_bad_operations_are_refused_with_the_rule(parse: object, text: str,
                                                   words: str) -> None:
    with pytest.raises(tf.TransformError, match=words):
        parse(text)  # type: ignore[operator]


def test_map_values_of_one_key_merge_and_a_value_mapped_twice_is_refused(
        tmp_path: Path) -> None:
    f = tmp_path / "map.csv"
    f.write_text("key,from,to\nteam,a,x\nteam,b,y\n")
    ops = tf.merged(tf.map_file(str(f)))
    assert ops == [("map", "team", {"a": "x", "b": "y"})]
    with pytest.raises(tf.TransformError, match="mapped twice"):
        tf.merged([tf.map_value("team:a=x"), tf.map_value("team:a=z")])
    f.write_text("team,a\n")
    with pytest.raises(tf.TransformError, match="expected 3 columns"):
        tf.map_file(str(f))


KEYS = st.sampled_from(["a", "b", "A", "c", "cc", "CC", "Cc"])
VALUES = st.sampled_from(["", "x", "y", "X", "hello world"])
OPS = st.one_of(
    st.tuples(KEYS, KEYS).filter(lambda p: p[0] != p[1]).map(lambda p: tf.rename("=".join(p))),
    st.tuples(KEYS, KEYS).filter(lambda p: p[0] != p[1]).map(lambda p: tf.copy("=".join(p))),
    st.tuples(KEYS, st.sampled_from(tf.CASES)).map(lambda p: tf.value_case("=".join(p))),
    st.tuples(KEYS, VALUES, VALUES).map(lambda p: ("map", p[0], {p[1]: p[2]})),
    st.sampled_from(["cc=CC", "cc=Cc", "a=A"]).map(tf.key_case),
)


@settings(max_examples=400, deadline=None)
@given(tags=st.dictionaries(KEYS, VALUES, max_size=6), ops=st.lists(OPS, min_size=1,
                                                                      max_size=4),
       overwrite=st.booleans())
def test_undo_of_a_transform_puts_back_exactly_what_was_there(
        tags: dict[str, str], ops: list[tf.Op], overwrite: bool) -> None:
    rules = OVERWRITE if overwrite else RULES
    d = decide(Rules(kind="transform", skip_compliant=True, case_conflict="apply",
                     on_conflict=rules.on_conflict), body(*ops), tags)
    if not d.send:
        return
    after = dict(tags)
    for k, v in d.override.items():  # set, then remove
        if v is not None:
            after[k] = v
    for k, v in d.override.items():
        if v is None:
            after.pop(k, None)
    assert after == tf.apply(ops, tags, rules.on_conflict).tags
    undo = undo_body("transform", tf.to_json(ops), encode(d.before))
    assert undo is not None
    restored = dict(after)
    for k, (value, expect) in json.loads(undo).items():
        assert restored.get(k) == expect  # what undo checks before restoring
        if value is None:
            restored.pop(k, None)
        else:
            restored[k] = value
    assert restored == tags
