"""A tag or untag submission's options, checked and defaulted once for every front end.

The CLI's `tag`/`untag` parse their flags into a `Submission` and print what comes back; any
other front end that submits a job builds the same one, so a rule lives here once. Each field is
checked where it is declared, in the order the CLI has always reported them (the first fault
wins), and a fault raises UsageError (exit 2) naming the option as the CLI spells it.
`job_options` (file jobs) and `query_job_options` (discovery jobs) are what is kept with the
job; the priority is checked by the same `steering.check_priority` as a change of priority.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bulktag.app.runs import ExportSpec, export_spec
from bulktag.app.steering import check_priority
from bulktag.app.submit import Request, request_problem
from bulktag.config import Settings
from bulktag.errors import UsageError
from bulktag.policy.transforms import ON_CONFLICT, Op, to_json
from bulktag.store import JobOptions

OPERATIONS = ("tag", "untag")
ROUTES = ("auto", "tagging-api")
CASE_CONFLICTS = ("skip", "apply")


@dataclass(frozen=True, slots=True)
class Submission:
    """What a tag or untag submission asks for, beyond its resources. Raises UsageError on the
    first bad field."""

    operation: str  #: tag | untag
    #: tag: the tags every item gets (per-row tags of a CSV/JSONL source add to them)
    tags: dict[str, str] = field(default_factory=dict)
    #: untag: the keys every item loses (per-row keys add to them)
    keys: tuple[str, ...] = ()
    #: bad rows become `invalid` items instead of refusing the whole submission
    skip_invalid: bool = False
    #: fail the job when more than this share of attempted items failed, in (0, 1]
    #: (None: the setting's)
    failure_ratio: float | None = None
    #: ... once at least this many items were attempted, >= 0 (None: the setting's)
    failure_min_items: int | None = None
    #: read current tags first and skip resources already right (None: on for tag, off for
    #: untag); `if_absent` needs it on
    skip_compliant: bool | None = None
    #: tag only: add only the keys a resource does not have yet (never overwrite a value)
    if_absent: bool = False
    #: keep each changed resource's prior values, so `bulktag undo` can put them back
    before_images: bool = True
    #: a key differing only in case from one the resource has: skip the resource (None, the
    #: default) or apply it
    case_conflict: str | None = None
    #: the route of EC2 resources: `auto` (EC2's API for what CreateTags takes) or
    #: `tagging-api` (everything through the Tagging API); the settings' when a CLI submits
    route: str = "auto"
    #: `--export-on-finish`: s3://bucket/prefix or a directory, written when the job ends
    export_on_finish: str | None = None
    export_region: str | None = None  #: the bucket's region (s3:// only)
    export_kms_key_arn: str | None = None  #: SSE-KMS key (s3:// only; default SSE-S3)
    name: str | None = None  #: a name for the job
    priority: int = 0  #: higher runs first
    #: the credentials' account when known (the pre-flight's): ARNs without one are its
    caller_account: str = ""
    #: a transform (operation "tag"): its operations (`policy.transforms`), in order
    transform: tuple[Op, ...] = ()
    #: transform: a destination key holding another value: skip (None) | overwrite
    on_conflict: str | None = None
    #: send tags the accounts' tag policies refuse (else refused before any call)
    allow_noncompliant: bool = False
    _export: ExportSpec | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise UsageError(f"the operation must be tag or untag, not {self.operation!r}")
        problem = request_problem(self.request)
        if problem:
            raise UsageError(f"--{'tag' if self.operation == 'tag' else 'key'}: {problem}")
        if self.failure_ratio is not None and not 0 < self.failure_ratio <= 1:
            raise UsageError(f"--failure-ratio must be in (0, 1], not {self.failure_ratio:g}")
        if self.failure_min_items is not None and self.failure_min_items < 0:
            raise UsageError(f"--failure-min-items must not be negative, "
                             f"not {self.failure_min_items}")
        if self.if_absent and self.skip_compliant is False:
            raise UsageError("--if-absent reads current tags to keep existing values: it "
                             "cannot go with --no-skip-compliant")
        # kept with the job, even when it is only submitted now and run later
        object.__setattr__(self, "_export", export_spec(
            self.export_on_finish, self.export_region, self.export_kms_key_arn))
        if self.if_absent and self.operation != "tag":
            raise UsageError("--if-absent applies to tag jobs only")
        if self.case_conflict not in (None, *CASE_CONFLICTS):
            raise UsageError(f"--case-conflict must be skip or apply, not {self.case_conflict!r}")
        if self.route not in ROUTES:
            raise UsageError(f"--route must be auto or tagging-api, not {self.route!r}")
        check_priority(self.priority)
        if self.transform:
            if self.operation != "tag" or self.tags or self.keys:
                raise UsageError("a transform takes operations (--rename, --copy, ...), not "
                                 "--tag or --key")
            if self.if_absent:
                raise UsageError("--if-absent does not apply to a transform")
        if self.on_conflict not in (None, *ON_CONFLICT):
            raise UsageError(f"--on-conflict must be skip or overwrite, not "
                             f"{self.on_conflict!r}")

    @property
    def request(self) -> Request:
        """The operation and its tags or keys, as `submit` takes them."""
        return Request(self.operation, tags=self.tags, keys=self.keys,
                       skip_invalid=self.skip_invalid, caller_account=self.caller_account,
                       transform=to_json(self.transform) if self.transform else None)

    @property
    def reads_first(self) -> bool:
        """Read current tags before sending (skip-compliant, resolved: `if_absent` and a
        transform force it)."""
        if self.if_absent or self.transform:
            return True
        return self.operation == "tag" if self.skip_compliant is None else self.skip_compliant

    def check_targets(self, *, query: bool, sources: Sequence[str] | None) -> None:
        """Exactly one of sources (--arns) or a query; a query job needs its tags or keys on the
        command line (its resources come with none of their own)."""
        if query and sources:
            raise UsageError("give either --arns or a query (--query, --match-tag, "
                             "--resource-type), not both")
        if not query and not sources and not self.transform:
            raise UsageError("nothing to work on: give --arns SRC, or a query (--query, "
                             "--match-tag, --resource-type)")
        if self.transform:
            return  # no source: discovery finds the resources carrying the source keys
        if query and self.operation == "tag" and not self.tags:
            raise UsageError("--tag: give at least one tag to apply")
        if query and self.operation == "untag" and not self.keys:
            raise UsageError("--key: give at least one key to remove")

    def job_options(self) -> JobOptions:
        """The options kept with a file job (`submit` adds the tags, keys and sources)."""
        return JobOptions(
            failure_ratio=self.failure_ratio, failure_min_items=self.failure_min_items,
            skip_compliant=self.reads_first, if_absent=self.if_absent, route=self.route,
            before_images=self.before_images, case_conflict=self.case_conflict,
            export_on_finish=self._export.to_json() if self._export else None,
            transform=[list(op) for op in self.transform] or None,
            allow_noncompliant=self.allow_noncompliant,
            on_conflict=self.on_conflict if self.transform else None)

    def query_job_options(self, query: dict[str, Any], accounts: list[str],
                          regions: list[str]) -> JobOptions:
        """The options kept with a discovery job: the query, where it walks (`accounts` checked
        by `check_accounts`, "" for the caller's), and the tags or keys every resource found
        gets."""
        return self.job_options().with_(query=query, tags=self.tags, keys=list(self.keys),
                                        accounts=accounts, regions=regions)


def way_in(settings: Settings) -> dict[str, str | None]:
    """The submitter's role (--role-name, --external-id, --role-session-name or its config)
    as job options: kept with the job, so whichever worker works it reaches the job's accounts
    the same way (a worker's own [accounts."ID"] entries still win)."""
    if not settings.role_name:
        return {}
    return {"role_name": settings.role_name, "external_id": settings.external_id,
            "role_session_name": settings.role_session_name}
