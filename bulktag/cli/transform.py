"""`bulktag transform`, `bulktag rename` and `bulktag fix-policy`: the command line of transform
jobs.

The operations are repeatable flags applied in the order given (`--rename a=b --value-case
b=lower`), so they are gathered into one ordered list by `_Op` rather than one list per flag.
The job itself is submitted by `cli.main` like a tag job (the same sources, plan, run).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from bulktag.errors import UsageError
from bulktag.policy import transforms

PARSE: dict[str, Callable[[str], transforms.Op]] = {
    "--rename": transforms.rename, "--copy": transforms.copy,
    "--value-case": transforms.value_case, "--map-value": transforms.map_value,
    "--key-case": transforms.key_case,
}


class _Op(argparse.Action):
    """Appends (flag, text) to `ops`, keeping the order across flags."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        ops = list(getattr(namespace, "ops", None) or [])
        ops.append((option_string, values))
        namespace.ops = ops


def add_operations(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("operations (repeatable, applied in the order given)")
    g.add_argument("--rename", action=_Op, dest="ops", metavar="OLD=NEW",
                   help="OLD's value moves to NEW; OLD is removed")
    g.add_argument("--copy", action=_Op, dest="ops", metavar="SRC=DST",
                   help="DST gets SRC's value; SRC stays")
    g.add_argument("--value-case", action=_Op, dest="ops", metavar="KEY=lower|upper|title",
                   help="KEY's value in that case")
    g.add_argument("--map-value", action=_Op, dest="ops", metavar="KEY:FROM=TO",
                   help="KEY's value FROM becomes TO (exact match)")
    g.add_argument("--map-value-file", action=_Op, dest="ops", metavar="FILE",
                   help="many --map-value: a CSV of key,from,to rows")
    g.add_argument("--key-case", action=_Op, dest="ops", metavar="KEY=Canonical",
                   help="every case variant of KEY (costcenter, COSTCENTER) becomes Canonical")
    p.add_argument("--on-conflict", choices=transforms.ON_CONFLICT, default=None,
                   help="a destination key already holding another value: skip the resource, "
                        "naming both values (default), or overwrite it")


def operations(args: argparse.Namespace) -> tuple[transforms.Op, ...]:
    """The operations of the command line, parsed and checked, in order (UsageError)."""
    given: list[tuple[str, str]] = list(getattr(args, "ops", None) or [])
    if args.command == "fix-policy":
        try:
            maps: list[transforms.Op] = []
            for flag, text in given:
                maps.extend(transforms.map_file(text) if flag == "--map-value-file"
                            else [PARSE[flag](text)])
            return (transforms.fix_policy(maps),)
        except transforms.TransformError as exc:
            raise UsageError(str(exc)) from None
    if args.command == "rename":
        given.insert(0, ("--rename", f"{args.old}={args.new}"))
    if not given:
        raise UsageError("no operation: give --rename, --copy, --value-case, --map-value, "
                         "--map-value-file or --key-case")
    ops: list[transforms.Op] = []
    try:
        for flag, text in given:
            if flag == "--map-value-file":
                ops.extend(transforms.map_file(text))
            else:
                ops.append(PARSE[flag](text))
        return tuple(transforms.merged(ops))
    except transforms.TransformError as exc:
        raise UsageError(str(exc)) from None


def add_parsers(sub: Any, job_submission: Callable[[argparse.ArgumentParser], None],
                common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser(
        "transform", help="change the tags resources have: rename, copy, fix case, map values",
        epilog="Each resource's tags are read when its item is claimed and the operations "
               "applied in order; new keys are set first, old keys removed after (a crash in "
               "between leaves both, never neither). Without a source, discovery finds the "
               "resources carrying the operations' source keys.")
    job_submission(p)
    add_operations(p)
    common(p)
    p = sub.add_parser(
        "fix-policy", help="fix what does not comply with the accounts' tag policies",
        epilog="Each resource is fixed against its account's effective tag policy, from the "
               "tags read when its item is claimed: a key in another case takes the policy's "
               "case (value kept); a value matching exactly one allowed value but for case "
               "takes it; --map-value answers the rest. A resource with anything that has no "
               "single right answer is left as it is, skipped with code needs-decision. "
               "Without a source, discovery asks GetResources for the noncompliant resources "
               "of each account and region.")
    job_submission(p)
    g = p.add_argument_group("answers for values the policy does not allow (repeatable)")
    g.add_argument("--map-value", action=_Op, dest="ops", metavar="KEY:FROM=TO",
                   help="KEY's value FROM becomes TO (exact match; KEY in any case)")
    g.add_argument("--map-value-file", action=_Op, dest="ops", metavar="FILE",
                   help="many --map-value: a CSV of key,from,to rows")
    common(p)
    p = sub.add_parser("rename", help="rename a tag key: bulktag transform --rename OLD=NEW")
    p.add_argument("old", metavar="OLD")
    p.add_argument("new", metavar="NEW")
    job_submission(p)
    add_operations(p)
    common(p)
