"""Transforms: change the tags a resource already has (rename, copy, fix case, map values).

A transform job carries a list of operations, applied in the order given to each resource's
current tags, read when its item is claimed (never from a snapshot taken at submission):

- `rename OLD NEW`: OLD's value moves to NEW and OLD goes;
- `copy SRC DST`: DST gets SRC's value, SRC stays;
- `value_case KEY lower|upper|title`: KEY's value in that case;
- `map KEY {FROM: TO, ...}`: KEY's value FROM becomes TO (exact match);
- `key_case Canonical`: every case variant of the key (`costcenter`, `COSTCENTER`) becomes
  `Canonical`, with its value;
- `fix_policy {KEY: {FROM: TO}}`: the tags as the account's effective tag policy wants them
  where there is one right answer (`tag_policy.fix`; the maps are the user's answers for the
  rest). What still needs a decision leaves the resource alone (code `needs-decision`). The
  policy is the resource's account's, given to `apply` by the caller (read when the item is
  claimed), so a before-image of such a job keeps what was set beside what was there
  (`[before, after]`): undo needs no policy that may have changed since.

A destination that already holds another value is a **conflict**: with `on_conflict="skip"`
(the default) the resource is left alone and the reason names both values; with "overwrite" the
source's value wins (for `key_case`, the value of the first variant in sorted key order).

`apply` is the whole rule; the engine and the plan call it through `changes.decide`, and undo
calls it on a before-image (which holds every key the operations read or write) to know what
the job set. Operations are stored as JSON arrays (`to_json`), the tagset body of every item of
the job. No I/O here.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bulktag.api_limits import RESERVED_PREFIX
from bulktag.policy.tag_policy import TagPolicy, fix
from bulktag.policy.tags import key_problem, value_problem

CONFLICT_CODE = "Conflict"
NEEDS_DECISION_CODE = "needs-decision"  #: a policy fix with no single right answer
FIX_POLICY = "fix_policy"
ON_CONFLICT = ("skip", "overwrite")
CASES = ("lower", "upper", "title")
_SHOW = 60

#: ("rename", OLD, NEW), ("copy", SRC, DST), ("value_case", KEY, CASE), ("map", KEY, {FROM: TO}),
#: ("key_case", CANONICAL), ("fix_policy", {lowercase KEY: {FROM: TO}})
Op = tuple[Any, ...]


class TransformError(ValueError):
    """A bad operation (names it and says what is allowed)."""


@dataclass(frozen=True, slots=True)
class Applied:
    tags: dict[str, str]  #: the tags after every operation
    conflict: str | None = None  #: why the resource is left alone (on_conflict skip)
    code: str = CONFLICT_CODE  #: the conflict's kind (Conflict, needs-decision)


def _show(value: str) -> str:
    return repr(value if len(value) <= _SHOW else value[:_SHOW] + "...")


# -- parsing (command line, files) ------------------------------------------------------------


def _pair(text: str, flag: str) -> tuple[str, str]:
    left, sep, right = text.partition("=")
    if not sep or not left or not right:
        raise TransformError(f"{flag} expects A=B, got {text!r}")
    return left, right


def _key(key: str, flag: str) -> str:
    problem = key_problem(key)
    if problem is not None:
        if key[:4].lower() == RESERVED_PREFIX:
            problem = (f"tag key {_show(key)} uses the reserved prefix {RESERVED_PREFIX!r}: "
                       "AWS's own tags cannot be renamed, copied or removed")
        raise TransformError(f"{flag}: {problem}")
    return key


def _value(key: str, value: str, flag: str) -> str:
    problem = value_problem(key, value)
    if problem is not None:
        raise TransformError(f"{flag}: {problem}")
    return value


def rename(text: str) -> Op:
    old, new = _pair(text, "--rename")
    if old == new:
        raise TransformError(f"--rename {text}: the new key is the old one")
    return ("rename", _key(old, "--rename"), _key(new, "--rename"))


def copy(text: str) -> Op:
    src, dst = _pair(text, "--copy")
    if src == dst:
        raise TransformError(f"--copy {text}: the destination is the source")
    return ("copy", _key(src, "--copy"), _key(dst, "--copy"))


def value_case(text: str) -> Op:
    key, case = _pair(text, "--value-case")
    if case not in CASES:
        raise TransformError(f"--value-case {text}: the case must be one of "
                             f"{', '.join(CASES)}, not {case!r}")
    return ("value_case", _key(key, "--value-case"), case)


def map_value(text: str) -> Op:
    key, sep, rest = text.partition(":")
    if not sep:
        raise TransformError(f"--map-value expects KEY:FROM=TO, got {text!r}")
    old, sep, new = rest.partition("=")
    if not sep:
        raise TransformError(f"--map-value expects KEY:FROM=TO, got {text!r}")
    _key(key, "--map-value")
    return ("map", key, {_value(key, old, "--map-value"): _value(key, new, "--map-value")})


def key_case(text: str) -> Op:
    key, sep, canonical = text.partition("=")
    if not sep or not canonical:
        raise TransformError(f"--key-case expects KEY=Canonical, got {text!r}")
    if key.lower() != canonical.lower():
        raise TransformError(f"--key-case {text}: {canonical!r} is not a case variant of "
                             f"{key!r} (use --rename for another key)")
    return ("key_case", _key(canonical, "--key-case"))


def map_file(path: str) -> list[Op]:
    """`--map-value-file`: CSV rows `key,from,to` (a header row `key,from,to` is skipped)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise TransformError(f"--map-value-file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TransformError(f"--map-value-file {path}: not UTF-8 text") from None
    ops: list[Op] = []
    for n, row in enumerate(rows, 1):
        if not row or (n == 1 and [c.strip().lower() for c in row] == ["key", "from", "to"]):
            continue
        if len(row) != 3:
            raise TransformError(f"--map-value-file {path}:{n}: expected 3 columns "
                                 f"key,from,to, got {len(row)}")
        key, old, new = row
        try:
            _key(key, "--map-value-file")
            ops.append(("map", key, {_value(key, old, "--map-value-file"):
                                     _value(key, new, "--map-value-file")}))
        except TransformError as exc:
            raise TransformError(f"{path}:{n}: {exc}") from None
    if not ops:
        raise TransformError(f"--map-value-file {path}: no rows key,from,to")
    return ops


def fix_policy(maps: Iterable[Op] = ()) -> Op:
    """The operation of `bulktag fix-policy`, with the user's `--map-value` answers."""
    table: dict[str, dict[str, str]] = {}
    for op in merged(maps):
        if op[0] != "map":
            raise TransformError("fix-policy takes only --map-value and --map-value-file")
        table.setdefault(str(op[1]).lower(), {}).update(op[2])
    return (FIX_POLICY, table)


def with_policy(ops: Sequence[Op]) -> bool:
    """Whether the operations need the account's tag policy (`apply(..., policy=)`)."""
    return any(op[0] == FIX_POLICY for op in ops)


def merged(ops: Iterable[Op]) -> list[Op]:
    """Consecutive maps of one key as one map (a file of 1,000 values: one look-up); a FROM
    mapped twice to different values is refused."""
    out: list[Op] = []
    for op in ops:
        if op[0] == "map" and out and out[-1][0] == "map" and out[-1][1] == op[1]:
            table = dict(out[-1][2])
            for old, new in op[2].items():
                if table.get(old, new) != new:
                    raise TransformError(f"value {old!r} of {op[1]!r} mapped twice: to "
                                         f"{table[old]!r} and {new!r}")
                table[old] = new
            out[-1] = ("map", op[1], table)
        else:
            out.append(op)
    return out


def to_json(ops: Sequence[Op]) -> str:
    """The operations as the job's tagset body: canonical JSON."""
    return json.dumps([list(op) for op in ops], separators=(",", ":"), ensure_ascii=False,
                      sort_keys=True)


def from_json(body: Sequence[Sequence[Any]]) -> list[Op]:
    return [tuple(op) for op in body]


# -- what the operations read and write ---------------------------------------------------------


def source_keys(ops: Sequence[Op]) -> list[str]:
    """Keys a resource must carry for the first operation to do anything (discovery's TagFilters
    without a source); a key_case's canonical key stands for its variants."""
    keys: list[str] = []
    for op in ops:
        if op[0] == FIX_POLICY:
            continue  # any key of the policy: discovery asks AWS for noncompliant resources
        key = str(op[1])
        if key not in keys:
            keys.append(key)
    return keys


def describe(op: Op) -> str:
    kind = op[0]
    if kind == "rename":
        return f"rename {op[1]} → {op[2]}"
    if kind == "copy":
        return f"copy {op[1]} → {op[2]}"
    if kind == "value_case":
        return f"{op[2]}-case the value of {op[1]}"
    if kind == "map":
        table: Mapping[str, str] = op[2]
        shown = ", ".join(f"{a!r} → {b!r}" for a, b in list(table.items())[:3])
        more = f" (+{len(table) - 3} more)" if len(table) > 3 else ""
        return f"map {op[1]}: {shown}{more}"
    if kind == FIX_POLICY:
        answers = sum(len(t) for t in op[1].values())
        extra = f" (and {answers} value(s) mapped by --map-value)" if answers else ""
        return f"fix what the account's tag policy has one right answer for{extra}"
    return f"every case variant of {op[1]} → {op[1]}"


# -- the rule ----------------------------------------------------------------------------------


def _conflict(dst: str, has: str, src: str, value: str) -> str:
    return (f"conflict: {dst} is {_show(has)}, {src} is {_show(value)} "
            "(--on-conflict overwrite replaces it)")


def apply(ops: Sequence[Op], tags: Mapping[str, str], on_conflict: str = "skip", *,
          policy: TagPolicy | None = None) -> Applied:
    """The tags after `ops`, in order; on a conflict with "skip", the first conflict's reason
    (and the tags as they were). `policy`: the resource's account's effective tag policy
    (needed by `fix_policy`)."""
    out = dict(tags)
    for op in ops:
        kind, key = op[0], str(op[1])
        if kind == FIX_POLICY:
            if policy is None:
                raise TransformError("fix_policy needs the account's tag policy")
            out, undecided = fix(policy, out, op[1])
            if undecided:
                return Applied(dict(tags), "needs a decision: " + "; ".join(undecided) +
                               " (left as it is; --map-value KEY:FROM=TO decides a value)",
                               NEEDS_DECISION_CODE)
            continue
        if kind in ("rename", "copy"):
            dst = str(op[2])
            if key not in out:
                continue
            value = out[key]
            if dst in out and out[dst] != value:
                if on_conflict != "overwrite":
                    return Applied(dict(tags), _conflict(dst, out[dst], key, value))
            out[dst] = value
            if kind == "rename":
                del out[key]
        elif kind == "value_case":
            if key in out:
                value = out[key]
                out[key] = value.lower() if op[2] == "lower" else \
                    value.upper() if op[2] == "upper" else value.title()
        elif kind == "map":
            table: Mapping[str, str] = op[2]
            if key in out and out[key] in table:
                out[key] = table[out[key]]
        elif kind == "key_case":
            variants = sorted(k for k in out if k.lower() == key.lower() and k != key)
            if not variants:
                continue
            values = {out[k] for k in variants} | ({out[key]} if key in out else set())
            if len(values) > 1 and on_conflict != "overwrite":
                named = [k for k in ([key] if key in out else []) + variants]
                return Applied(dict(tags), "conflict: " + ", ".join(
                    f"{k} is {_show(out[k])}" for k in named) +
                    " (--on-conflict overwrite takes the first variant's value)")
            value = out[variants[0]]
            for k in variants:
                del out[k]
            out[key] = value
        else:
            raise TransformError(f"unknown transform operation {kind!r}")
    return Applied(out)


def affects(ops: Sequence[Op], tags: Mapping[str, str], on_conflict: str = "skip", *,
            policy: TagPolicy | None = None) -> bool:
    """Whether the operations change these tags, or meet a conflict on them (discovery keeps
    only such resources: the rest would end `skipped` without a call)."""
    applied = apply(ops, tags, on_conflict, policy=policy)
    return applied.conflict is not None or bool(changes_of(tags, applied.tags))


def changes_of(current: Mapping[str, str], after: Mapping[str, str]) -> dict[str, str | None]:
    """What to send: keys to set (their new values) and keys to remove (None)."""
    changes: dict[str, str | None] = {k: v for k, v in after.items() if current.get(k) != v}
    changes.update({k: None for k in current if k not in after})
    return changes


def image_keys(ops: Sequence[Op], current: Mapping[str, str],
               changes: Mapping[str, str | None]) -> list[str]:
    """The keys a before-image keeps: every key the operations read or write on this
    resource, so that `apply` on the image gives what the job set (undo)."""
    keys = set(changes)
    for op in ops:
        keys.add(str(op[1]))
        if op[0] == "key_case":
            keys.update(k for k in current if k.lower() == str(op[1]).lower())
    return sorted(keys)


def case_only_renames(changes: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """(removed, added) keys that differ only in case: one key to a service that ignores case
    (IAM), where the removal would take the new key with it."""
    added = {k.lower(): k for k, v in changes.items() if v is not None}
    return [(k, added[k.lower()]) for k, v in changes.items()
            if v is None and k.lower() in added]
