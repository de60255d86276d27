"""What a job changes on one resource, decided from its current tags, with no I/O.

The engine reads a batch's current tags just before it sends them (GetResources); `decide`
then says, per resource, whether to send, what (the tagset, or only some keys), the
before-image to keep (the prior value of each key the call changes, None where the key was
absent) and, when nothing is sent, why: already right, a guardrail (a key differing only in
case from one the resource has; more than 50 user tags), or for an undo job a value another
client changed since. The plan (`--dry-run`) runs the same function, so it counts what the run
would do.

An undo job is a tag job whose tagset bodies map each key to `[restore, expect]`: the value to
put back (None: remove the key) and the value the undone job set (None: it removed the key).
Keeping both in the tagset means the check needs no look-up in the undone job while sending,
and bodies stay few (resources that had the same prior values share one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bulktag.api_limits import RESERVED_PREFIX, TAGS_PER_RESOURCE
from bulktag.policy import transforms
from bulktag.policy.tag_policy import TagPolicy

#: a job's kinds of change: tag, untag, undo (a tag job with `[restore, expect]` bodies) or
#: transform (a tag job whose body is a list of operations, `transforms.py`)
KINDS = ("tag", "untag", "undo", "transform")
CASE_CONFLICT_CHOICES = ("skip", "apply")
TAG_LIMIT_CODE = "TagLimitExceeded"
CASE_CONFLICT_CODE = "CaseConflict"
CHANGED_CODE = "ChangedSince"
_SHOW = 60  # characters of a value quoted in a reason


@dataclass(frozen=True, slots=True)
class Rules:
    """What a job asked for, as far as deciding one resource goes."""

    kind: str = "tag"  # tag | untag | undo
    skip_compliant: bool = False
    if_absent: bool = False
    case_conflict: str = "skip"  # skip | apply
    force: bool = False  # undo: restore keys another client changed since
    undo_of: int | None = None
    on_conflict: str = "skip"  # transform: a destination holding another value


@dataclass(frozen=True, slots=True)
class Decision:
    send: bool
    reason: str | None = None
    #: what to send instead of the tagset: tags (None: remove that key) or keys; None: the
    #: tagset as it is
    override: Any = None
    before: dict[str, str | None] = field(default_factory=dict)  # touched keys, prior values
    after: dict[str, str | None] = field(default_factory=dict)  # ... and what they become
    failed: bool = False  # refused by a guardrail: `failed`, not `skipped`
    code: str | None = None
    already: bool = False  # nothing to change: the resource is already as the job wants
    #: the before-image keeps `[before, after]` per key (a fix-policy transform: what it set
    #: depended on the account's policy then, which undo must not need)
    paired: bool = False

    def image(self) -> dict[str, Any]:
        """The before-image kept for this change (`encode`d into the store)."""
        if self.paired:
            return {k: [v, self.after.get(k)] for k, v in self.before.items()}
        return dict(self.before)


def _show(value: str | None) -> str:
    if value is None:
        return "absent"
    return repr(value if len(value) <= _SHOW else value[:_SHOW] + "...")


def user_keys(tags: Mapping[str, Any]) -> int:
    """Tags that count against the 50-tag limit (`aws:` ones, in any case, do not)."""
    return sum(1 for k in tags if k[:4].lower() != RESERVED_PREFIX)


def decide(rules: Rules, body: Any, current: Mapping[str, str], *,
           case_insensitive: bool = False, policy: TagPolicy | None = None) -> Decision:
    """Whether a resource with `current` tags gets the call, with what, and what it had.
    `case_insensitive`: the resource's service takes keys differing in case for one (IAM).
    `policy`: the resource's account's tag policy (a fix-policy transform)."""
    if rules.kind == "transform":
        return _decide_transform(rules, body, current, case_insensitive, policy)
    if rules.kind == "untag":
        present = {k: current[k] for k in body if k in current}
        if not present:
            if rules.skip_compliant:
                return Decision(False, "none of the keys present", already=True)
            return Decision(True, already=True)
        return Decision(True, before=dict(present), after=dict.fromkeys(present))
    if rules.kind == "undo":
        return _decide_undo(rules, body, current)
    wanted: dict[str, str] = body
    sent: dict[str, str] | None = None
    if rules.if_absent:
        missing = {k: v for k, v in wanted.items() if k not in current}
        if not missing:
            return Decision(False, "every key already present (--if-absent)", already=True)
        if len(missing) < len(wanted):
            sent = missing
        wanted = missing
    changes: dict[str, str | None] = {k: v for k, v in wanted.items() if current.get(k) != v}
    if not changes:
        if rules.skip_compliant:
            return Decision(False, "already carries the tags", already=True)
        return Decision(True, override=sent, already=True)
    refused = _guardrails(rules, changes, current)
    if refused is not None:
        return refused
    return Decision(True, override=sent, before={k: current.get(k) for k in changes},
                    after=changes)


def _decide_undo(rules: Rules, body: Mapping[str, list[str | None]],
                 current: Mapping[str, str]) -> Decision:
    needed: dict[str, str | None] = {}
    changed: list[str] = []
    for key, (restore, expect) in body.items():
        now = current.get(key)
        if now == restore:
            continue
        if now == expect or rules.force:
            needed[key] = restore
        else:
            changed.append(f"{key} is {_show(now)}, job {rules.undo_of} set {_show(expect)}")
    if changed and not rules.force:
        return Decision(False, f"changed since job {rules.undo_of}: {'; '.join(changed)} "
                        "(bulktag undo --force restores it anyway)", code=CHANGED_CODE)
    if not needed:
        return Decision(False, f"already as before job {rules.undo_of}", already=True)
    refused = _guardrails(rules, needed, current)
    if refused is not None:
        return refused
    return Decision(True, override=needed, before={k: current.get(k) for k in needed},
                    after=needed)


def _decide_transform(rules: Rules, body: Any, current: Mapping[str, str],
                      case_insensitive: bool, policy: TagPolicy | None) -> Decision:
    """A transform's change on one resource: the operations applied to its tags now; keys to
    set and keys to remove (None), sent in that order (never neither key)."""
    ops = transforms.from_json(body)
    applied = transforms.apply(ops, current, rules.on_conflict, policy=policy)
    if applied.conflict is not None:
        return Decision(False, applied.conflict, code=applied.code)
    changes = transforms.changes_of(current, applied.tags)
    if not changes:
        return Decision(False, "nothing to transform (no source key, or already as the "
                        "operations make it)", already=True)
    if case_insensitive and transforms.case_only_renames(changes):
        (old, new), *_ = transforms.case_only_renames(changes)
        return Decision(False, f"{old!r} → {new!r} changes only the case of a key on a "
                        "service whose keys ignore case (IAM): the removal of the old key "
                        "would remove the new one; change it with the service's own API",
                        code=CASE_CONFLICT_CODE)
    refused = _guardrails(rules, changes, current)
    if refused is not None:
        return refused
    paired = transforms.with_policy(ops)
    keys = sorted(changes) if paired else transforms.image_keys(ops, current, changes)
    return Decision(True, override=changes, before={k: current.get(k) for k in keys},
                    after={k: applied.tags.get(k) for k in keys}, paired=paired)


def _guardrails(rules: Rules, changes: Mapping[str, str | None],
                current: Mapping[str, str]) -> Decision | None:
    """A change AWS would take but get wrong: a new key differing only in case from one the
    resource has (IAM treats them as one key, other services keep both), or more than 50 user
    tags (the call would fail; refused without one)."""
    added = [k for k, v in changes.items() if v is not None and k not in current]
    if rules.case_conflict != "apply":
        # the keys the resource keeps: one this change removes is no conflict
        lower = {k.lower(): k for k in current if k not in changes or changes[k] is not None}
        for key in added:
            other = lower.get(key.lower())
            if other is not None:
                return Decision(False, f"key {key!r} differs only in case from the resource's "
                                f"{other!r} (--case-conflict apply sends it anyway)",
                                code=CASE_CONFLICT_CODE)
    removed = sum(1 for k, v in changes.items() if v is None and k in current)
    total = user_keys(current) + user_keys(dict.fromkeys(added)) - removed
    if total > TAGS_PER_RESOURCE and user_keys(dict.fromkeys(added)):
        return Decision(False, f"would have {total} tags (limit {TAGS_PER_RESOURCE})",
                        failed=True, code=TAG_LIMIT_CODE)
    return None


# -- before-images and undo bodies ---------------------------------------------------------------


def encode(image: Mapping[str, Any]) -> str:
    """A before-image (or an undo body) as stored: compact JSON, keys sorted."""
    return json.dumps(image, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def kind_of(operation: str, undo_of: int | None, transform: bool = False) -> str:
    return "undo" if undo_of is not None else "transform" if transform else operation


def is_paired(image: Any) -> bool:
    """A before-image that keeps `[before, after]` per key (`Decision.paired`)."""
    return isinstance(image, dict) and any(isinstance(v, list) for v in image.values())


def prior_of(image: Mapping[str, Any]) -> dict[str, str | None]:
    """A before-image's prior values, paired or not."""
    return {k: v[0] if isinstance(v, list) else v for k, v in image.items()}


def after_of(kind: str, body: Any, keys: Any) -> dict[str, str | None]:
    """What a job set each of `keys` to on a resource (None: removed), from its tagset body.
    For a transform, `keys` is the before-image: the operations applied to it (it holds every
    key they read or write) give what the job set (with no conflict: the item changed); a
    paired image says it itself."""
    if is_paired(keys):
        return {k: v[1] if isinstance(v, list) else v for k, v in keys.items()}
    if kind == "transform":
        prior = {k: v for k, v in keys.items() if v is not None}
        after = transforms.apply(transforms.from_json(body), prior, "overwrite").tags
        return {k: after.get(k) for k in keys}
    if kind == "untag":
        return dict.fromkeys(keys)
    if kind == "undo":
        return {k: body[k][0] for k in keys}
    return {k: body.get(k) for k in keys}


def undo_body(kind: str, body: str, before: str) -> str | None:
    """The tagset body of the item that undoes one changed item: for each key the job changed,
    `[value before, value the job set]`; None when it changed nothing."""
    image = json.loads(before)
    prior = prior_of(image)
    after = after_of(kind, json.loads(body), image)
    pairs = {k: [prior[k], after[k]] for k in prior if prior[k] != after[k]}
    return encode(pairs) if pairs else None


def is_undo_body(body: Any) -> bool:
    return isinstance(body, dict) and any(isinstance(v, list) for v in body.values())


def sendable(body: Any) -> Any:
    """An undo body as the tags to send (the values to restore); other bodies as they are."""
    if is_undo_body(body):
        return {k: v[0] for k, v in body.items()}
    return body


def split_tags(operation: str, tags: Any) -> tuple[dict[str, str] | None, list[str] | None]:
    """(tags to set, keys to remove) of what a batch sends: a tag job's None values are keys
    to remove (an undo), an untag job's keys all are."""
    if operation == "untag":
        return None, list(tags)
    sets = {k: v for k, v in tags.items() if v is not None}
    removes = [k for k, v in tags.items() if v is None]
    return sets or None, removes or None


def diff_text(before: Mapping[str, str | None], after: Mapping[str, str | None]) -> str:
    """`key: before → after` for each touched key."""
    return ", ".join(f"{k}: {_show(before.get(k))} → {_show(after.get(k))}" for k in sorted(after))
