"""Export a job's report and manifest to a local directory or to S3, under `job-<id>/`.

After Systems Manager's resource data sync: a bucket, a prefix, the bucket's region, and
server-side encryption with a KMS key (`kms_key_arn`) or else SSE-S3 (AES256). Rows stream from
the store; a local file is written in ~1 MiB chunks in a worker thread, an S3 object goes up as
one PutObject when small, else as a multipart upload of `part_size` parts (8 MiB; S3 wants
>= 5 MiB for every part but the last), aborted on any failure. The manifest is written last, so
a reader that finds it finds complete rows files.

Failures raise ExportError with a message naming the destination; the CLI prints it as
`bulktag: error: ...` and exits 4 (EXIT_EXPORT).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog

from bulktag.app.report import (
    WrittenFile,
    build_manifest,
    manifest_bytes,
    rows_file_name,
    stream_report,
)
from bulktag.aws.s3 import PART_SIZE, S3ObjectWriter, s3_client
from bulktag.config import Settings
from bulktag.errors import EXIT_EXPORT, BulktagError
from bulktag.store import Job, Store

log = structlog.get_logger("bulktag.app.export")

MANIFEST = "manifest.json"
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson",
                 "json": "application/json"}


class ExportError(BulktagError):
    """The report could not be written to its destination (message says where and why)."""

    exit_code = EXIT_EXPORT


@dataclass(frozen=True, slots=True)
class Destination:
    """Where reports go: `s3://bucket/prefix` (bucket set) or a local directory."""

    url: str
    bucket: str | None = None
    prefix: str = ""
    directory: Path | None = None

    def job_folder(self, job_id: int) -> str:
        """The S3 key prefix or local path of a job's folder."""
        if self.bucket is not None:
            return f"{self.prefix}/job-{job_id}" if self.prefix else f"job-{job_id}"
        assert self.directory is not None
        return str(self.directory / f"job-{job_id}")


def parse_destination(text: str) -> Destination:
    """`s3://bucket[/prefix]` or a directory path; raises ValueError on an s3 URL with no bucket."""
    if text.startswith("s3://"):
        bucket, _, prefix = text.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"{text!r}: no bucket name after s3://")
        return Destination(text, bucket=bucket, prefix=prefix.strip("/"))
    return Destination(text, directory=Path(text))


def is_directory_target(text: str) -> bool:
    """-o names a directory (write job-<id>/ in it) when it exists as one or ends with /."""
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


# -- writers -------------------------------------------------------------------------------------


class LocalFileWriter:
    """Writes to `<path>.partial` in a worker thread, renamed over `path` on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self._file: Any = None

    async def open(self) -> None:
        self._file = await anyio.to_thread.run_sync(self._open)

    def _open(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.partial, "wb")

    async def write(self, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._file.write, data)

    async def close(self) -> None:
        def finish() -> None:
            self._file.close()
            os.replace(self.partial, self.path)
        await anyio.to_thread.run_sync(finish)

    async def abort(self) -> None:
        def drop() -> None:
            self._file.close()
            with contextlib.suppress(OSError):
                self.partial.unlink()
        if self._file is not None:
            await anyio.to_thread.run_sync(drop)


# -- errors --------------------------------------------------------------------------------------


def s3_error_message(dest: Destination, key: str, code: str, message: str,
                     kms_key_arn: str | None) -> str:
    """What went wrong writing `key`, in words an operator can act on."""
    where = f"export to {dest.url}"
    bucket = dest.bucket
    if code in ("NoSuchBucket", "404"):
        return f"{where}: bucket '{bucket}' does not exist"
    if code in ("AccessDenied", "AccessDeniedException", "403", "AllAccessDisabled"):
        need = f"s3:PutObject on arn:aws:s3:::{bucket}/{key.rsplit('/', 1)[0]}/*"
        if kms_key_arn:
            need += f", and kms:GenerateDataKey and kms:Decrypt on {kms_key_arn}"
        return (f"{where}: access denied to bucket '{bucket}' ({message or code}); "
                f"the caller needs {need}")
    if code.startswith("KMS.") or code.startswith("KMS") or "kms" in code.lower():
        return f"{where}: the KMS key {kms_key_arn} cannot be used ({code}: {message})"
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraint"):
        return (f"{where}: bucket '{bucket}' is in another region; give its region with "
                f"--region ({code}: {message})")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
        return f"{where}: the credentials were refused ({code}: {message})"
    return f"{where}: {code}: {message}"


def describe_s3_error(exc: Exception, dest: Destination, key: str,
                      kms_key_arn: str | None) -> str:
    """A message naming the destination and, for AWS errors, the missing permission."""
    from bulktag.aws.reads import aws_error_of  # botocore: only once an S3 call has failed

    error = aws_error_of(exc)
    if error is not None and error.code is not None:
        return s3_error_message(dest, key, error.code, error.message, kms_key_arn)
    if error is not None:
        return f"export to {dest.url}: {error.text}"
    return f"export to {dest.url}: {type(exc).__name__}: {exc}"


# -- exporting -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Exported:
    manifest: dict[str, Any]
    manifest_location: str


async def export_report(
    store: Store, job: Job, dest: Destination, settings: Settings, *, fmt: str = "csv",
    failed_only: bool = False, region: str | None = None, kms_key_arn: str | None = None,
    part_size: int = PART_SIZE,
) -> Exported:
    """Write the rows file and then manifest.json under the destination's job-<id>/."""
    if dest.bucket is None:
        try:
            return await _export_local(store, job, dest, fmt=fmt, failed_only=failed_only)
        except OSError as exc:
            raise ExportError(f"export to {dest.url}: {exc.strerror or exc}: "
                              f"{exc.filename or dest.url}") from None
    try:
        async with s3_client(settings, region) as client:
            return await _export_s3(client, store, job, dest, fmt=fmt, failed_only=failed_only,
                                    kms_key_arn=kms_key_arn, part_size=part_size)
    except Exception as exc:  # creating or closing the client
        if not _is_aws_error(exc):
            raise
        raise ExportError(describe_s3_error(exc, dest, dest.job_folder(job.id) + "/", kms_key_arn)
                          ) from None


async def _export_local(store: Store, job: Job, dest: Destination, *, fmt: str,
                        failed_only: bool) -> Exported:
    folder = Path(dest.job_folder(job.id))
    name = rows_file_name(fmt, failed_only)
    files = [await _write_local(store, job, folder / name, fmt=fmt, failed_only=failed_only)]
    manifest = await build_manifest(store, job, files, fmt=fmt, failed_only=failed_only,
                                    destination=str(folder))
    writer = LocalFileWriter(folder / MANIFEST)
    await writer.open()
    try:
        await writer.write(manifest_bytes(manifest))
    except BaseException:
        await writer.abort()
        raise
    await writer.close()
    log.info("report_exported", job=job.id, destination=str(folder), rows=files[0].rows,
             bytes=files[0].bytes)
    return Exported(manifest, str(folder / MANIFEST))


async def _write_local(store: Store, job: Job, path: Path, *, fmt: str,
                       failed_only: bool) -> WrittenFile:
    writer = LocalFileWriter(path)
    await writer.open()
    try:
        written = await stream_report(store, job.id, job.operation, writer.write, fmt=fmt,
                                      failed_only=failed_only, name=path.name,
                                      location=str(path))
    except BaseException:
        await writer.abort()
        raise
    await writer.close()
    return written


async def write_report_file(store: Store, job: Job, path: str, *, fmt: str,
                            failed_only: bool) -> WrittenFile:
    """The report alone to one local file (`-o FILE`), written in chunks off the event loop."""
    try:
        return await _write_local(store, job, Path(path), fmt=fmt, failed_only=failed_only)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None


async def _export_s3(client: Any, store: Store, job: Job, dest: Destination, *, fmt: str,
                     failed_only: bool, kms_key_arn: str | None, part_size: int) -> Exported:
    assert dest.bucket is not None
    folder = dest.job_folder(job.id)
    name = rows_file_name(fmt, failed_only)
    key = f"{folder}/{name}"
    started = time.monotonic()
    writer = S3ObjectWriter(client, dest.bucket, key, content_type=CONTENT_TYPES[fmt],
                            kms_key_arn=kms_key_arn, part_size=part_size)
    try:
        written = await stream_report(store, job.id, job.operation, writer.write, fmt=fmt,
                                      failed_only=failed_only, name=name,
                                      location=f"s3://{dest.bucket}/{key}")
        await writer.close()
    except BaseException as exc:
        await writer.abort()
        if isinstance(exc, Exception) and _is_aws_error(exc):
            raise ExportError(describe_s3_error(exc, dest, key, kms_key_arn)) from None
        raise
    manifest = await build_manifest(store, job, [written], fmt=fmt, failed_only=failed_only,
                                    destination=f"s3://{dest.bucket}/{folder}/")
    manifest_key = f"{folder}/{MANIFEST}"
    mwriter = S3ObjectWriter(client, dest.bucket, manifest_key,
                             content_type=CONTENT_TYPES["json"], kms_key_arn=kms_key_arn,
                             part_size=part_size)
    try:
        await mwriter.write(manifest_bytes(manifest))
        await mwriter.close()
    except Exception as exc:
        await mwriter.abort()
        if _is_aws_error(exc):
            raise ExportError(describe_s3_error(exc, dest, manifest_key, kms_key_arn)) from None
        raise
    log.info("report_exported", job=job.id, destination=f"s3://{dest.bucket}/{folder}/",
             rows=written.rows, bytes=written.bytes, parts=writer.parts or 1,
             seconds=round(time.monotonic() - started, 2))
    return Exported(manifest, f"s3://{dest.bucket}/{manifest_key}")


def _is_aws_error(exc: Exception) -> bool:
    """botocore's error (S3 answered no, or could not be reached): the export's to report."""
    from bulktag.aws.reads import aws_error_of

    return aws_error_of(exc) is not None
