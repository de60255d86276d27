"""The submission rules every front end shares (`app/submission.py`), case by case: each bad
option is refused with the message the CLI prints, the first fault in the CLI's order wins,
and the defaults land in the JobOptions kept with the job."""

from __future__ import annotations

from typing import Any

import pytest

from bulktag.app.steering import check_priority
from bulktag.app.submission import Submission
from bulktag.errors import EXIT_USAGE, UsageError


def refused(**fields: Any) -> str:
    with pytest.raises(UsageError) as caught:
        Submission(**fields)
    assert caught.value.exit_code == EXIT_USAGE
    return str(caught.value)


@pytest.mark.parametrize(("fields", "message"), [
    ({"operation": "tag", "tags": {"aws:owner": "a"}}, "--tag: "),
    ({"operation": "untag", "keys": ("aws:owner",)}, "--key: "),
    ({"operation": "tag", "failure_ratio": 0.0}, "--failure-ratio must be in (0, 1], not 0"),
    ({"operation": "tag", "failure_ratio": 1.5}, "--failure-ratio must be in (0, 1], not 1.5"),
    ({"operation": "tag", "failure_min_items": -1},
     "--failure-min-items must not be negative, not -1"),
    ({"operation": "tag", "if_absent": True, "skip_compliant": False},
     "--if-absent reads current tags to keep existing values: it cannot go with "
     "--no-skip-compliant"),
    ({"operation": "untag", "keys": ("a",), "if_absent": True},
     "--if-absent applies to tag jobs only"),
    ({"operation": "tag", "export_region": "eu-west-1"},
     "--export-region and --export-kms-key-arn need --export-on-finish"),
    ({"operation": "tag", "export_on_finish": "/tmp/reports", "export_kms_key_arn": "k"},
     "--export-region and --export-kms-key-arn apply only to s3:// destinations"),
    ({"operation": "tag", "export_on_finish": "s3://"}, "--export-on-finish: "),
    ({"operation": "tag", "case_conflict": "merge"}, "--case-conflict must be skip or apply"),
    ({"operation": "tag", "route": "ec2"}, "--route must be auto or tagging-api"),
    ({"operation": "tag", "priority": "5"}, "priority must be a whole number"),
    ({"operation": "retag"}, "the operation must be tag or untag"),
])
def test_a_bad_option_is_refused_with_the_clis_message(fields: dict[str, Any],
                                                       message: str) -> None:
    assert message in refused(**fields)


def test_the_first_fault_in_the_clis_order_wins() -> None:
    # ratio before min items before if-absent before the export spec before the operation
    assert refused(operation="untag", failure_ratio=2.0, failure_min_items=-1,
                   if_absent=True).startswith("--failure-ratio")
    assert refused(operation="untag", failure_min_items=-1, if_absent=True,
                   skip_compliant=False).startswith("--failure-min-items")
    assert refused(operation="untag", if_absent=True,
                   export_region="x").startswith("--export-region")


@pytest.mark.parametrize(("operation", "skip_compliant", "if_absent", "reads_first"), [
    ("tag", None, False, True),  # on for tag
    ("untag", None, False, False),  # off for untag
    ("tag", False, False, False),
    ("untag", True, False, True),
    ("tag", None, True, True),  # if-absent needs the read
    ("tag", True, True, True),
])
def test_skip_compliant_defaults_by_operation(operation: str, skip_compliant: bool | None,
                                              if_absent: bool, reads_first: bool) -> None:
    submission = Submission(operation, skip_compliant=skip_compliant, if_absent=if_absent)
    assert submission.reads_first is reads_first
    assert submission.job_options().skip_compliant is reads_first


def test_job_options_carry_the_choices_and_the_export() -> None:
    options = Submission(
        "tag", tags={"Owner": "a"}, failure_ratio=0.5, failure_min_items=10,
        case_conflict="apply", route="tagging-api", export_on_finish="s3://bucket/p",
        export_region="eu-west-1", export_kms_key_arn="arn:aws:kms:k").job_options()
    assert (options.failure_ratio, options.failure_min_items) == (0.5, 10)
    assert (options.case_conflict, options.route, options.before_images) == (
        "apply", "tagging-api", True)
    assert options.export_on_finish is not None
    assert options.export_on_finish["destination"] == "s3://bucket/p"
    assert options.export_on_finish["region"] == "eu-west-1"
    assert Submission("tag").job_options().export_on_finish is None


def test_a_query_job_keeps_the_query_its_targets_and_the_tags() -> None:
    submission = Submission("untag", keys=("a", "b"), before_images=False)
    options = submission.query_job_options({"Type": "TAG_FILTERS_1_0"}, [""], ["eu-west-1"])
    assert options.query == {"Type": "TAG_FILTERS_1_0"}
    assert (options.keys, options.accounts, options.regions) == (["a", "b"], [""], ["eu-west-1"])
    assert options.before_images is False and options.skip_compliant is False


@pytest.mark.parametrize(("submission", "query", "sources", "message"), [
    (Submission("tag", tags={"a": "b"}), True, ["x.txt"], "give either --arns or a query"),
    (Submission("tag", tags={"a": "b"}), False, None, "nothing to work on: give --arns SRC"),
    (Submission("tag", tags={"a": "b"}), False, [], "nothing to work on"),
    (Submission("tag"), True, None, "--tag: give at least one tag to apply"),
    (Submission("untag"), True, None, "--key: give at least one key to remove"),
])
def test_targets_are_either_sources_or_a_query(submission: Submission, query: bool,
                                               sources: list[str] | None, message: str) -> None:
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(")):
        submission.check_targets(query=query, sources=sources)


def test_good_targets_pass() -> None:
    Submission("tag").check_targets(query=False, sources=["x.txt"])  # tags may come per row
    Submission("untag", keys=("a",)).check_targets(query=True, sources=None)


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None])
def test_a_priority_is_a_whole_number(value: object) -> None:
    with pytest.raises(UsageError, match="priority must be a whole number"):
        check_priority(value)


def test_a_priority_may_be_any_whole_number() -> None:
    assert [check_priority(n) for n in (-3, 0, 7)] == [-3, 0, 7]
