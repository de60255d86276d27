"""What a job changes on one resource (`changes.decide`): the before-image, the guardrails and the
undo checks, as pure decisions."""

from __future__ import annotations

from bulktag.policy.changes import Rules, decide, diff_text, sendable, split_tags, undo_body

TAG = Rules(kind="tag", skip_compliant=True)


def test_tag_keeps_only_the_keys_it_changes() -> None:
    d = decide(TAG, {"Owner": "new", "Team": "x"}, {"Owner": "new", "Other": "1"})
    assert d.send and d.before == {"Team": None} and d.after == {"Team": "x"}
    assert d.override is None  # the whole tagset goes: batches stay wide
    assert decide(TAG, {"Owner": "new"}, {"Owner": "new"}).reason == "already carries the tags"
    sent_anyway = decide(Rules(kind="tag"), {"Owner": "new"}, {"Owner": "new"})
    assert sent_anyway.send and sent_anyway.already and sent_anyway.before == {}


def test_if_absent_sends_only_the_missing_keys() -> None:
    d = decide(Rules(kind="tag", if_absent=True), {"a": "1", "b": "2"}, {"a": "9"})
    assert d.override == {"b": "2"} and d.before == {"b": None}


def test_case_conflict_skips_naming_the_key_unless_applied() -> None:
    d = decide(TAG, {"Owner": "x"}, {"owner": "y"})
    assert not d.send and not d.failed and d.code == "CaseConflict"
    assert "'Owner' differs only in case from the resource's 'owner'" in (d.reason or "")
    assert decide(Rules(kind="tag", case_conflict="apply"), {"Owner": "x"}, {"owner": "y"}).send
    assert decide(TAG, {"Owner": "x"}, {"Owner": "y"}).send  # the same key: an overwrite


def test_tag_limit_counts_user_tags_only() -> None:
    fifty = {f"k{n}": "v" for n in range(50)}
    d = decide(TAG, {"new": "1"}, fifty)
    assert (d.send, d.failed, d.code, d.reason) == \
        (False, True, "TagLimitExceeded", "would have 51 tags (limit 50)")
    assert decide(TAG, {"k0": "changed"}, fifty).send  # an overwrite adds nothing
    with_aws = {**{f"k{n}": "v" for n in range(49)}, "aws:a": "1", "AWS:b": "2", "Aws:c": "3"}
    assert decide(TAG, {"new": "1"}, with_aws).send


def test_untag_image_holds_the_removed_values() -> None:
    d = decide(Rules(kind="untag"), ["Owner", "Gone"], {"Owner": "ann", "Keep": "k"})
    assert d.before == {"Owner": "ann"} and d.after == {"Owner": None}
    assert decide(Rules(kind="untag", skip_compliant=True), ["x"], {}).reason == \
        "none of the keys present"


def test_undo_restores_skips_changed_and_forces() -> None:
    body = {"Owner": ["old", "new"], "Team": [None, "x"]}
    undo = Rules(kind="undo", skip_compliant=True, undo_of=7)
    d = decide(undo, body, {"Owner": "new", "Team": "x"})
    assert d.override == {"Owner": "old", "Team": None}
    assert d.before == {"Owner": "new", "Team": "x"}
    changed = decide(undo, body, {"Owner": "other", "Team": "x"})
    assert not changed.send and changed.code == "ChangedSince"
    assert "changed since job 7: Owner is 'other', job 7 set 'new'" in (changed.reason or "")
    forced = decide(Rules(kind="undo", force=True, undo_of=7), body, {"Owner": "other"})
    assert forced.override == {"Owner": "old"}  # Team is already absent
    done = decide(undo, body, {"Owner": "old"})
    assert not done.send and done.already and done.reason == "already as before job 7"


def test_undo_bodies_and_what_is_sent() -> None:
    assert undo_body("tag", '{"a":"1","b":"2"}', '{"a":null}') == '{"a":[null,"1"]}'
    assert undo_body("undo", '{"a":[null,"1"]}', '{"a":"1"}') == '{"a":["1",null]}'
    assert undo_body("tag", '{"a":"1"}', "{}") is None
    assert sendable({"a": ["old", "new"], "b": [None, "x"]}) == {"a": "old", "b": None}
    assert sendable({"a": "1"}) == {"a": "1"}
    assert split_tags("tag", {"a": "old", "b": None}) == ({"a": "old"}, ["b"])
    assert split_tags("tag", {"b": None}) == (None, ["b"])
    assert split_tags("untag", ["k"]) == (None, ["k"])
    assert diff_text({"a": None}, {"a": "1"}) == "a: absent → '1'"
