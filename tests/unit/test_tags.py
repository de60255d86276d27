"""Tag validation: every rule's message, and the character class as a property."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulktag.api_limits import TAGS_PER_CALL as MAX_TAGS
from bulktag.arn import account_problem, region_problem
from bulktag.policy.tags import (
    key_problem,
    keys_problem,
    parse_tag_arg,
    tagset_problem,
    value_problem,
)

ALLOWED = "(allowed: letters, digits, spaces, _ . : / = + - @)"


def _allowed(char: str) -> bool:
    return char in "_.:/=+-@" or unicodedata.category(char)[0] in "LZN"


allowed_chars = st.characters(categories=("L", "Z", "N"), include_characters="_.:/=+-@")
refused_chars = st.characters().filter(lambda c: not _allowed(c))


@pytest.mark.parametrize(
    "key",
    [
        "Name",
        "cost-center",
        "team/app:env=prod+x@y_z.1",
        "a" * 128,
        "Kostenstelle Nr 1",
        "名前",
        "Ñandú",
        "коды",
        "٣٤",
        "x\u00a0y",
        "aws",
        "awsfoo",
        "aw:s",
    ],
)
def test_valid_keys_pass(key: str) -> None:
    assert key_problem(key) is None


def test_empty_key_is_refused() -> None:
    assert key_problem("") == "tag key is empty; the API needs 1 to 128 characters"


def test_long_key_names_its_length() -> None:
    problem = key_problem("k" * 129)
    assert problem is not None
    assert "is 129 characters long; the API accepts at most 128" in problem
    assert problem.startswith("tag key 'kkkk")


def test_refused_character_in_key_is_named() -> None:
    assert key_problem("Cost Center!") == (
        "tag key 'Cost Center!' has a character the API refuses: '!' " + ALLOWED
    )


def test_refused_non_ascii_character_is_named_with_its_unicode_name() -> None:
    problem = key_problem("team\u200bname")
    assert problem is not None
    assert "'\\u200b' (U+200B ZERO WIDTH SPACE)" in problem


@pytest.mark.parametrize("key", ["tab\there", "new\nline", "emoji🙂", "a,b", "a*b", "a#b"])
def test_control_and_symbol_characters_are_refused(key: str) -> None:
    problem = key_problem(key)
    assert problem is not None
    assert "has a character the API refuses" in problem


@pytest.mark.parametrize("key", ["aws:foo", "AWS:foo", "Aws:cloudformation:stack-name", "aws:"])
def test_reserved_prefix_is_refused_in_any_case(key: str) -> None:
    assert key_problem(key) == f"tag key {key!r} uses the reserved prefix 'aws:'"


@pytest.mark.parametrize("value", ["", "prod", "v" * 256, "équipe données", "a=b:c/d"])
def test_valid_values_pass(value: str) -> None:
    assert value_problem("team", value) is None


def test_reserved_prefix_is_allowed_in_values() -> None:
    assert value_problem("source", "aws:managed") is None


def test_long_value_names_key_and_length() -> None:
    assert value_problem("team", "v" * 300) == (
        "tag value for 'team' is 300 characters long; the API accepts at most 256"
    )


def test_refused_character_in_value_names_the_key() -> None:
    assert value_problem("team", "a;b") == (
        "tag value for 'team' has a character the API refuses: ';' " + ALLOWED
    )


def test_tagset_needs_at_least_one_tag() -> None:
    assert tagset_problem({}) == "no tags given; the API needs 1 to 50"


def test_tagset_accepts_fifty_tags_and_refuses_fifty_one() -> None:
    fifty = {f"k{i}": "v" for i in range(MAX_TAGS)}
    assert tagset_problem(fifty) is None
    assert tagset_problem({**fifty, "one-more": "v"}) == (
        "51 tags given; the API accepts at most 50"
    )


def test_tagset_reports_a_bad_key_or_value() -> None:
    assert tagset_problem({"ok": "v", "aws:x": "v"}) == (
        "tag key 'aws:x' uses the reserved prefix 'aws:'"
    )
    problem = tagset_problem({"ok": "v", "team": "x" * 257})
    assert problem is not None and "tag value for 'team' is 257 characters long" in problem


def test_keys_problem_rules() -> None:
    assert keys_problem(["env", "team"]) is None
    assert keys_problem([]) == "no tag keys given; the API needs 1 to 50"
    assert keys_problem([f"k{i}" for i in range(51)]) == (
        "51 tag keys given; the API accepts at most 50"
    )
    assert keys_problem(["env", "aws:x"]) == "tag key 'aws:x' uses the reserved prefix 'aws:'"
    assert keys_problem(["env", ""]) == "tag key is empty; the API needs 1 to 128 characters"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("env=prod", ("env", "prod")),
        ("env=", ("env", "")),
        ("url=a=b", ("url", "a=b")),
        ("=v", ("", "v")),
        ("Cost Center=R&D 1", ("Cost Center", "R&D 1")),
    ],
)
def test_parse_tag_arg_splits_at_first_equals(text: str, expected: tuple[str, str]) -> None:
    assert parse_tag_arg(text) == expected


def test_parse_tag_arg_without_equals_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"expected KEY=VALUE, got 'env'"):
        parse_tag_arg("env")


@given(st.text(allowed_chars, min_size=1, max_size=128).filter(
    lambda k: k[:4].lower() != "aws:" and k == k.strip()))
def test_any_key_of_allowed_characters_passes(key: str) -> None:
    assert key_problem(key) is None


def test_keys_with_edge_spaces_and_keys_differing_only_in_case_are_refused() -> None:
    assert "leading or trailing spaces" in (key_problem(" k ") or "")
    assert "leading or trailing spaces" in (tagset_problem({"k ": "v"}) or "")
    assert key_problem("Cost Center") is None  # inner spaces are the API's to allow
    assert value_problem("k", " v ") is None  # values keep their spaces (shown quoted)
    problem = tagset_problem({"k": "1", "K": "2"}) or ""
    assert "'k' and 'K' differ only in case" in problem


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-2", "ap-southeast-4",
                                    "us-gov-west-1", "cn-north-1", "il-central-1",
                                    "mx-central-1", "us-isob-east-1"])
def test_real_region_names_pass(region: str) -> None:
    assert region_problem(region) is None


@pytest.mark.parametrize("region", ["moon-1", "", "US-EAST-1", "us-east", "us_east_1",
                                    "<b>-x-1", "us-east-1 "])
def test_other_region_names_are_refused(region: str) -> None:
    assert "is not a region name" in (region_problem(region) or "")


def test_account_ids_are_twelve_digits() -> None:
    assert account_problem("123456789012") is None
    for bad in ("12345678901", "1234567890123", "12345678901x", "١٢٣٤٥٦٧٨٩٠١٢"):
        assert "not a 12-digit account id" in (account_problem(bad) or ""), bad


@given(st.text(allowed_chars, max_size=256))
def test_any_value_of_allowed_characters_passes(value: str) -> None:
    assert value_problem("k", value) is None


@given(st.text(allowed_chars, max_size=60), refused_chars, st.text(allowed_chars, max_size=60))
def test_any_refused_character_fails(before: str, bad: str, after: str) -> None:
    text = before + bad + after
    key = key_problem(text)
    value = value_problem("k", text)
    assert key is not None and "has a character the API refuses" in key
    assert value is not None and "has a character the API refuses" in value
