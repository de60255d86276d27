"""The S3 client and object writer of report exports and inventory snapshots.

One client per export, with botocore's standard retries (5 attempts): unlike the Tagging API's
clients (`clients.py`) no shard limiter stands behind it, so botocore's own backoff is what
keeps a throttled upload going. aiobotocore is imported when a client is made, so a local
export never loads it. What a failed S3 call means is read by `reads.aws_error_of`.

An object is written as PutObject when it stays under `part_size` (8 MiB), else as a multipart
upload of `part_size` parts (S3 wants >= 5 MiB for every part but the last), aborted on any
failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bulktag.config import Settings

PART_SIZE = 8 * 1024 * 1024


@asynccontextmanager
async def s3_client(settings: Settings, region: str | None) -> AsyncIterator[Any]:
    """An S3 client in `region` (default: the configured one) with the caller's profile and
    `s3_endpoint_url`; closed when the block ends."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession

    session = AioSession(profile=settings.profile)
    config = AioConfig(retries={"mode": "standard", "max_attempts": 5},
                       connect_timeout=settings.connect_timeout,
                       read_timeout=settings.request_timeout)
    async with session.create_client("s3", region_name=region or settings.region,
                                     endpoint_url=settings.s3_endpoint_url,
                                     config=config) as client:
        yield client


class S3ObjectWriter:
    """One S3 object: buffered up to part_size; PutObject if it stays that small, else a
    multipart upload started with the first full part. Never holds more than ~one part."""

    def __init__(self, client: Any, bucket: str, key: str, *, content_type: str,
                 kms_key_arn: str | None, part_size: int = PART_SIZE) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.part_size = part_size
        self.extra: dict[str, Any] = {"ContentType": content_type}
        if kms_key_arn:
            self.extra |= {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_arn}
        else:
            self.extra["ServerSideEncryption"] = "AES256"
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    @property
    def parts(self) -> int:
        return len(self._parts)

    async def write(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= self.part_size:
            await self._upload_part(bytes(self._buf[: self.part_size]))
            del self._buf[: self.part_size]

    async def _upload_part(self, body: bytes) -> None:
        bucket = self.bucket
        if self._upload_id is None:
            resp = await self.client.create_multipart_upload(Bucket=bucket, Key=self.key,
                                                             **self.extra)
            self._upload_id = resp["UploadId"]
        number = len(self._parts) + 1
        resp = await self.client.upload_part(Bucket=bucket, Key=self.key, UploadId=self._upload_id,
                                             PartNumber=number, Body=body)
        self._parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    async def close(self) -> None:
        if self._upload_id is None:
            await self.client.put_object(Bucket=self.bucket, Key=self.key,
                                         Body=bytes(self._buf), **self.extra)
        else:
            if self._buf or not self._parts:
                await self._upload_part(bytes(self._buf))
            await self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts})
        self._buf = bytearray()

    async def abort(self) -> None:
        if self._upload_id is not None:
            with contextlib.suppress(Exception):  # the original error is the one to report
                await self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                         UploadId=self._upload_id)
            self._upload_id = None
