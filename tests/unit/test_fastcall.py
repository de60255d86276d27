"""The fast path's pure parts against botocore's own: the SigV4 Authorization header equals
botocore's SigV4Auth for the same request, and error and success answers parse as botocore's
JSON parser (plus the retry handler's metadata) parses them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import botocore.auth
import botocore.session
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.parsers import create_parser

from bulktag.aws.fast_tagging import (
    error_response,
    host_of,
    request_headers,
    signing_key,
    success_response,
)

AMZ_DATE = "20261126T034512Z"
MODEL = botocore.session.get_session().get_service_model("resourcegroupstaggingapi")
BODY = b'{"ResourceARNList":["arn:aws:ec2:eu-west-1:123456789012:instance/i-1"],' \
       b'"Tags":{"team":"a  b","x":""}}'


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzE//session+token=="])
@pytest.mark.parametrize("endpoint", ["https://tagging.eu-west-1.amazonaws.com",
                                      "http://127.0.0.1:8123", "https://vpce.example:443/"])
def test_authorization_equals_botocores_sigv4(
    monkeypatch: pytest.MonkeyPatch, region: str, token: str | None, endpoint: str
) -> None:
    ours = request_headers(
        operation="TagResources", host=host_of(endpoint), path="/", region=region,
        user_agent="bulktag/test", body=BODY, access_key="AKIDEXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token=token, amz_date=AMZ_DATE)

    # botocore signs the same request: its own clock fixed at our timestamp.
    fixed = dt.datetime(2026, 11, 26, 3, 45, 12)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: fixed)
    request = AWSRequest(method="POST", url=endpoint.rstrip("/") + "/", data=BODY, headers={
        "Content-Type": ours["Content-Type"], "X-Amz-Target": ours["X-Amz-Target"],
        "User-Agent": ours["User-Agent"]})
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    botocore.auth.SigV4Auth(credentials, "tagging", region).add_auth(request)

    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Date"] == request.headers["X-Amz-Date"]
    assert ours.get("X-Amz-Security-Token") == request.headers.get("X-Amz-Security-Token")
    assert ("x-amz-security-token" in ours["Authorization"]) == (token is not None)


def test_the_signing_key_is_derived_once_per_secret_date_and_region() -> None:
    signing_key.cache_clear()
    for _ in range(3):
        for region in ("us-east-1", "eu-west-1"):
            signing_key("secret", "20261126", region)
    assert signing_key.cache_info().misses == 2
    assert signing_key("secret", "20261126", "eu-west-1") != signing_key(
        "secret", "20261127", "eu-west-1")


def test_host_is_botocores() -> None:
    assert host_of("https://tagging.us-east-1.amazonaws.com") == "tagging.us-east-1.amazonaws.com"
    assert host_of("https://Tagging.Example:443/") == "tagging.example"
    assert host_of("http://127.0.0.1:80") == "127.0.0.1"
    assert host_of("http://127.0.0.1:8123") == "127.0.0.1:8123"
    assert host_of("https://user:pw@[::1]:8443") == "[::1]:8443"


def botocores(status: int, headers: dict[str, str], body: bytes,
              operation: str = "TagResources") -> dict[str, Any]:
    """What botocore's client holds for this answer: the JSON parser's output plus the
    retry handler's metadata of a client with total_max_attempts = 1."""
    shape = MODEL.operation_model(operation).output_shape
    parsed: dict[str, Any] = create_parser("json").parse(
        {"status_code": status, "headers": headers, "body": body}, shape)
    parsed["ResponseMetadata"].update(MaxAttemptsReached=True, RetryAttempts=0)
    return parsed


REQUEST_ID = {"x-amzn-requestid": "6c1c3f1e-0000-4a7e-9d5f-1f1f1f1f1f1f",
              "content-type": "application/x-amz-json-1.1"}


@pytest.mark.parametrize(("status", "headers", "body", "code"), [
    (400, REQUEST_ID, b'{"__type":"ThrottledException","message":"Rate exceeded"}',
     "ThrottledException"),
    (400, REQUEST_ID, b'{"__type":"com.amazonaws.tagging#InvalidParameterException",'
                      b'"Message":"bad ARN"}', "InvalidParameterException"),
    (400, {}, b'{"__type":"ExpiredTokenException:http://internal.amazon.com/coral/",'
              b'"message":"expired"}', "ExpiredTokenException"),
    (403, REQUEST_ID, b'{"__type":"AccessDeniedException"}', "AccessDeniedException"),
    (400, REQUEST_ID, b"{}", "400"),
    (500, REQUEST_ID, b"", "500"),
    (503, {}, b"  <html><body>Service Unavailable</body></html>", "503"),
    (502, {}, b"Bad Gateway from a proxy", "502"),
    (500, REQUEST_ID, b'{"__type":"InternalServiceException","message":"oops"}',
     "InternalServiceException"),
])
def test_errors_parse_as_botocore_parses_them(
    status: int, headers: dict[str, str], body: bytes, code: str
) -> None:
    ours = error_response(status, headers, body)
    assert ours == botocores(status, headers, body)
    assert ours["Error"]["Code"] == code


@pytest.mark.parametrize(("operation", "body"), [
    ("TagResources", b'{"FailedResourcesMap":{"arn:aws:ec2:us-east-1:1:instance/i-1":'
                     b'{"StatusCode":403,"ErrorCode":"AccessDeniedException",'
                     b'"ErrorMessage":"no"}}}'),
    ("UntagResources", b'{"FailedResourcesMap":{}}'),
    ("GetResources", b'{"PaginationToken":"tok","ResourceTagMappingList":[{"ResourceARN":'
                     b'"arn:aws:ec2:us-east-1:1:instance/i-1","Tags":[{"Key":"a","Value":""}]}]}'),
    ("GetResources", b""),
])
def test_answers_parse_as_botocore_parses_them(operation: str, body: bytes) -> None:
    assert success_response(200, REQUEST_ID, body) == botocores(200, REQUEST_ID, body, operation)
