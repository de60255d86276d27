"""Tag validation against the Resource Groups Tagging API's constraints, with no I/O.

Each check returns None when the input is acceptable, or a short reason naming the key and
the rule it breaks, so bad input is refused before anything is sent. Lengths count Unicode
code points, as the API's model (Smithy) defines string length.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from bulktag.api_limits import KEY_MAX as MAX_KEY_LENGTH
from bulktag.api_limits import RESERVED_PREFIX
from bulktag.api_limits import TAGS_PER_CALL as MAX_TAGS
from bulktag.api_limits import VALUE_MAX as MAX_VALUE_LENGTH

# The API's pattern is ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$. Python's re has no \p{}, so ASCII text
# (the common case) is accepted by this regex and anything else is checked a character at a time.
_ASCII_ALLOWED = re.compile(r"[A-Za-z0-9 _.:/=+\-@]*")
_PUNCTUATION = frozenset("_.:/=+-@")
_ALLOWED_TEXT = "letters, digits, spaces, _ . : / = + - @"
_SHOW_MAX = 60  # characters of a key quoted in a message before it is cut short


@lru_cache(maxsize=4096)
def _char_allowed(char: str) -> bool:
    return char in _PUNCTUATION or unicodedata.category(char)[0] in "LZN"


def _refused_char(text: str) -> str | None:
    """The first character of `text` the API's pattern refuses, or None."""
    if _ASCII_ALLOWED.fullmatch(text):
        return None
    for char in text:
        if not _char_allowed(char):
            return char
    return None


def _show(text: str) -> str:
    if len(text) > _SHOW_MAX:
        return repr(text[:_SHOW_MAX]) + "..."
    return repr(text)


def _show_char(char: str) -> str:
    if char.isascii():
        return repr(char)
    name = unicodedata.name(char, "")
    return f"{char!r} (U+{ord(char):04X}{' ' + name if name else ''})"


def key_problem(key: str) -> str | None:
    """Why `key` cannot be a tag key (empty, over 128 characters, a refused character, or the
    reserved `aws:` prefix in any case), or None."""
    if not key:
        return "tag key is empty; the API needs 1 to 128 characters"
    if len(key) > MAX_KEY_LENGTH:
        return (
            f"tag key {_show(key)} is {len(key)} characters long; "
            f"the API accepts at most {MAX_KEY_LENGTH}"
        )
    char = _refused_char(key)
    if char is not None:
        return (
            f"tag key {_show(key)} has a character the API refuses: {_show_char(char)} "
            f"(allowed: {_ALLOWED_TEXT})"
        )
    if key != key.strip():
        return (f"tag key {_show(key)} has leading or trailing spaces (a key is matched "
                "exactly: remove them)")
    if key[:4].lower() == RESERVED_PREFIX:
        return f"tag key {_show(key)} uses the reserved prefix {RESERVED_PREFIX!r}"
    return None


def value_problem(key: str, value: str) -> str | None:
    """Why `value` cannot be the value of tag `key` (over 256 characters or a refused
    character), or None. An empty value is valid."""
    if len(value) > MAX_VALUE_LENGTH:
        return (
            f"tag value for {_show(key)} is {len(value)} characters long; "
            f"the API accepts at most {MAX_VALUE_LENGTH}"
        )
    char = _refused_char(value)
    if char is not None:
        return (
            f"tag value for {_show(key)} has a character the API refuses: {_show_char(char)} "
            f"(allowed: {_ALLOWED_TEXT})"
        )
    return None


def tagset_problem(tags: Mapping[str, str]) -> str | None:
    """Why `tags` cannot be sent in one TagResources call (none, more than 50, or a bad key or
    value), or None. The first problem found is reported."""
    if not tags:
        return f"no tags given; the API needs 1 to {MAX_TAGS}"
    if len(tags) > MAX_TAGS:
        return f"{len(tags)} tags given; the API accepts at most {MAX_TAGS}"
    for key, value in tags.items():
        problem = key_problem(key) or value_problem(key, value)
        if problem is not None:
            return problem
    return case_clash(tags)


def case_clash(keys: Iterable[str]) -> str | None:
    """Two keys of one tag map differing only in case ('k' and 'K'): AWS keeps both on most
    services and one on others (IAM), so a job never sets both."""
    seen: dict[str, str] = {}
    for key in keys:
        other = seen.setdefault(key.lower(), key)
        if other != key:
            return (f"tag keys {_show(other)} and {_show(key)} differ only in case: give one "
                    "(keys are case-sensitive on most services, not on IAM)")
    return None


def keys_problem(keys: Sequence[str]) -> str | None:
    """Why `keys` cannot be sent in one UntagResources call (none, more than 50, or a bad
    key), or None."""
    if not keys:
        return f"no tag keys given; the API needs 1 to {MAX_TAGS}"
    if len(keys) > MAX_TAGS:
        return f"{len(keys)} tag keys given; the API accepts at most {MAX_TAGS}"
    for key in keys:
        problem = key_problem(key)
        if problem is not None:
            return problem
    return None


def parse_tag_arg(text: str) -> tuple[str, str]:
    """Split a command-line `KEY=VALUE` at the first `=`: the value may be empty or hold `=`.
    Neither part is stripped or validated here; a key holding `=` cannot be written this way."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"expected KEY=VALUE, got {text!r}: no '=' in it")
    return key, value


def parse_tag_args(texts: Sequence[str]) -> dict[str, str]:
    """Repeated KEY=VALUE arguments as a map; a key given twice with two values is refused."""
    tags: dict[str, str] = {}
    for text in texts:
        key, value = parse_tag_arg(text)
        if key in tags and tags[key] != value:
            raise ValueError(f"key {key!r} given twice, as {tags[key]!r} and {value!r}")
        tags[key] = value
    return tags
