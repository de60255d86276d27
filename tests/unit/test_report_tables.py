"""The advice shown beside each error code, and the per account, region and route table of
`status` and the end of a run: pure functions of counts, quotas and elapsed time (the same
through the CLI: tests/e2e/test_report.py)."""

from __future__ import annotations

import pytest

from bulktag.app.report import render_shard_table, shard_table
from bulktag.arn import Shard
from bulktag.policy import advice
from bulktag.policy.advice import advice_for
from bulktag.store import Counts

ACCOUNT = "123456789012"


@pytest.mark.parametrize(("code", "message", "status", "expected"), [
    ("AccessDeniedException", "not authorized to perform ec2:CreateTags", 403,
     advice.ROLE_PERMISSION),
    ("AccessDenied", "account 210987654321: cannot get credentials via role X: denied", 403,
     advice.TRUST_POLICY),
    ("AssumeRoleFailed", None, None, advice.TRUST_POLICY),
    ("ResourceNotFoundException", None, 404, advice.GONE),
    ("InvalidInstanceID.NotFound", None, 400, advice.GONE),
    ("DBInstanceNotFound", None, 404, advice.GONE),
    ("InvalidParameterException", None, 400, advice.UNSUPPORTED),
    ("InternalServiceException", None, 500, "transient: `bulktag retry JOB --code "
                                            "InternalServiceException`"),
    ("SomethingBroke", None, 503, "transient: `bulktag retry JOB --code SomethingBroke`"),
    ("ThrottlingException", None, 400, advice.THROTTLED),
    ("ThrottledException", None, 400, advice.THROTTLED),
    ("InvalidInput", "line 3: not an ARN", None, advice.BAD_INPUT),
    ("JobFailed", None, None, advice.JOB_FAILED),
    ("Cancelled", None, None, advice.CANCELLED),
    # a resource busy with another change: transient, as classify.py says (one list of codes)
    ("InvalidReplicationGroupState", "busy", 400,
     "transient: `bulktag retry JOB --code InvalidReplicationGroupState`"),
])
def test_advice_for_error_codes(code: str, message: str | None, status: int | None,
                                expected: str) -> None:
    assert advice_for(code, message, status) == expected


def test_shard_table_rates_against_quota_and_invalid_rows_last() -> None:
    east, west = Shard("aws", ACCOUNT, "us-east-1"), Shard("aws", ACCOUNT, "us-west-2")
    rows = shard_table({
        (None, "tagging-api"): Counts({"invalid": 2}),
        (west, "tagging-api"): Counts({"succeeded": 10, "pending": 5}),
        (east, "tagging-api"): Counts({"succeeded": 80, "skipped": 10, "failed": 10,
                                       "cancelled": 1}),
        (east, "ec2"): Counts({"succeeded": 3000, "pending": 1000}),
    }, elapsed=2.0, quotas={"tagging-api": 100.0, "ec2": 4000.0})
    assert [(r["region"], r["route"], r["done"], r["skipped"], r["failed"], r["open"],
             r["rate"]) for r in rows] == [
        ("us-east-1", "ec2", 3000, 0, 0, 1000, 1500.0),
        ("us-east-1", "tagging-api", 80, 10, 10, 0, 45.0),  # skips cost no call
        ("us-west-2", "tagging-api", 10, 0, 0, 5, 5.0), (None, "tagging-api", 0, 0, 2, 0, None)]
    text = render_shard_table(rows)
    assert text[2].split()[:3] == ["123456789012", "us-east-1", "ec2"]
    assert "1500.0  4000 (38%)" in text[2]
    assert "tagging-api" in text[3] and "45.0  100 (45%)  cancelled 1" in text[3]
    assert text[-1].split() == ["(invalid", "input)", "0", "0", "2", "0", "-", "-"]
    assert len(render_shard_table(rows, limit=1)) == 4  # header x2, the biggest, "... more"
