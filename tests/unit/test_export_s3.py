"""The message of an S3 export refused with AccessDenied: it names the bucket and the
permissions the caller needs (s3:PutObject on the prefix, and the KMS ones with a key). Exports
to moto's S3 through the CLI: tests/e2e/test_export_s3.py."""

from __future__ import annotations

from bulktag.app.export import parse_destination, s3_error_message


def test_access_denied_names_the_bucket_and_the_permission() -> None:
    dest = parse_destination("s3://audit/tagging")
    msg = s3_error_message(dest, "tagging/job-7/report.csv", "AccessDenied", "Access Denied",
                           None)
    assert msg == ("export to s3://audit/tagging: access denied to bucket 'audit' (Access "
                   "Denied); the caller needs s3:PutObject on "
                   "arn:aws:s3:::audit/tagging/job-7/*")
    msg = s3_error_message(dest, "tagging/job-7/report.csv", "AccessDenied", "", "arn:aws:kms:k")
    assert msg.endswith("and kms:GenerateDataKey and kms:Decrypt on arn:aws:kms:k")
