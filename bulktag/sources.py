"""Streamed sources of ARNs: text, CSV and JSONL files or stdin, optionally gzip-compressed.

A source is read a line at a time and never held whole, so a ten-million-line file costs
constant memory. A row that cannot be used (bad JSON, no ARN, malformed tags, invalid UTF-8,
an absurdly long line) comes back as a `Row` with a `problem` and its line number; a source
that cannot be read at all raises `SourceError`. ARNs themselves are not validated here.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import os
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from bulktag.errors import BulktagError

FORMATS = ("text", "csv", "jsonl")
ARN_COLUMNS = ("arn", "resourcearn", "resource arn", "identifier")  # in order of preference
NOT_TAGGED = "(not tagged)"  # what AWS Tag Editor's CSV export writes for an absent tag
MAX_LINE_BYTES = 1 << 20  # far above any valid row (50 tags of 128 + 256 characters)

_BUFFER_SIZE = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_TOO_LONG = f"line is longer than {MAX_LINE_BYTES} bytes"
_NOT_UTF8 = "line is not valid UTF-8"


@dataclass(slots=True)
class Row:
    line: int  # 1-based physical line; for CSV, the line the record starts on
    arn: str  # stripped; "" when none could be read
    tags: dict[str, str] | None  # per-row tags from CSV or JSONL, else None
    problem: str | None = None  # why the row is unusable, else None


class SourceError(BulktagError):
    """The whole source is unusable: missing file, no ARN column, undecodable gzip ..."""

    def __init__(self, source: str, reason: str, line: int | None = None) -> None:
        self.source = source
        self.reason = reason
        self.line = line
        #: set when the source failed after its job was already running (it is paused)
        self.job_note: str | None = None
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {reason}")


def source_name(spec: str | os.PathLike[str]) -> str:
    """How messages name the source: `<stdin>` for `-`, else the path."""
    spec = os.fspath(spec)
    return "<stdin>" if spec == "-" else spec


def open_rows(
    spec: str | os.PathLike[str], *, fmt: str | None = None, stdin: BinaryIO | None = None
) -> Iterator[Row]:
    """Open `spec` (a path, or `-` for `stdin`) and return an iterator of its rows.

    The format is `fmt`, else guessed from the name (`.csv`, `.jsonl`/`.ndjson`, else text;
    stdin is text). Gzip is recognised by its magic bytes, whatever the name (a `.gz` file that
    is not gzip is refused). Problems found
    on opening (missing file, no CSV header or ARN column) raise SourceError here; problems
    found mid-stream (truncated gzip, read errors) raise SourceError from the iterator.
    """
    name = source_name(spec)
    path = os.fspath(spec)
    if fmt is None:
        fmt = "text" if path == "-" else _format_from_name(path)
    elif fmt not in FORMATS:
        raise ValueError(f"unknown source format {fmt!r}; expected one of {', '.join(FORMATS)}")

    if path == "-":
        inner: BinaryIO = stdin if stdin is not None else sys.stdin.buffer
        close = False
    else:
        try:
            inner = open(path, "rb", buffering=0)
        except OSError as exc:
            raise SourceError(name, exc.strerror or str(exc)) from None
        close = True
    try:
        stream = _decompressed(inner, name, named_gz=path.lower().endswith(".gz"))
        if fmt == "csv":
            rows = _csv_rows(stream, name)
        elif fmt == "jsonl":
            rows = _jsonl_rows(stream)
        else:
            rows = _text_rows(stream)
    except (OSError, EOFError, zlib.error) as exc:
        if close:
            inner.close()
        raise SourceError(name, _read_failure(exc), 1) from None
    except BaseException:
        if close:
            inner.close()
        raise
    return _guarded(rows, name, inner if close else None)


def read_chunks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    """Consecutive lists of up to `size` rows: pull one per call from a worker thread so the
    event loop never waits on the file."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


# --- opening ---------------------------------------------------------------------------------


def _format_from_name(path: str) -> str:
    lower = path.lower()
    lower = lower.removesuffix(".gz")
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return "text"


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read (to sniff gzip), served again first."""

    def __init__(self, head: bytes, inner: BinaryIO) -> None:
        self._head = head
        self._inner = inner
        # read1-style calls return what is available, so rows from a slow pipe are not held back.
        self._readinto: Callable[[Any], int | None] | None = getattr(
            inner, "readinto1", None
        ) or getattr(inner, "readinto", None)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if self._readinto is not None:
            return self._readinto(buffer) or 0
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _decompressed(inner: BinaryIO, name: str, *, named_gz: bool) -> io.BufferedIOBase:
    """A buffered reader over `inner`, gunzipped when it starts with gzip's magic bytes."""
    head = b""
    try:
        while len(head) < 2 and (more := inner.read(2 - len(head))):
            head += more
    except OSError as exc:
        raise SourceError(name, f"cannot read: {exc.strerror or exc}") from None
    stream = io.BufferedReader(_Prefixed(head, inner), _BUFFER_SIZE)
    if head == _GZIP_MAGIC:
        gz = gzip.GzipFile(fileobj=stream, mode="rb")
        # A BufferedReader over GzipFile gives C-speed line iteration over the plain text.
        return io.BufferedReader(gz, _BUFFER_SIZE)
    if named_gz and head:
        raise SourceError(name, "named .gz but is not gzip data")
    return stream


def _guarded(rows: Iterator[Row], name: str, owned: BinaryIO | None) -> Iterator[Row]:
    """Yield `rows`, turning read and decompression failures into SourceError naming the
    line reached, and closing the file when done."""
    line = 0
    try:
        for row in rows:
            line = row.line
            yield row
    except SourceError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceError(name, _read_failure(exc), line + 1) from None
    finally:
        if owned is not None:
            owned.close()


def _read_failure(exc: BaseException) -> str:
    if isinstance(exc, gzip.BadGzipFile | EOFError | zlib.error):
        return f"corrupt or truncated gzip data: {exc}"
    if isinstance(exc, OSError):
        return f"read failed: {exc.strerror or exc}"
    return f"read failed: {exc}"


def _physical_lines(stream: io.BufferedIOBase) -> Iterator[bytes | None]:
    """Lines of `stream` as bytes, each with its newline; None stands for a line over
    MAX_LINE_BYTES, whose content is skipped without being held in memory."""
    readline = stream.readline
    first = readline(MAX_LINE_BYTES + 1)
    if first.startswith(_BOM):
        first = first[3:]
    raw = first
    while raw:
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := readline(_BUFFER_SIZE)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield raw
        raw = readline(MAX_LINE_BYTES + 1)


# --- formats ---------------------------------------------------------------------------------


def _text_rows(stream: io.BufferedIOBase) -> Iterator[Row]:
    """One ARN a line; blank lines and lines starting with `#` are skipped."""
    number = 0
    for raw in _physical_lines(stream):
        number += 1
        if raw is None:
            yield Row(number, "", None, _TOO_LONG)
            continue
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            arn = raw.decode(errors="backslashreplace").strip()
            yield Row(number, arn, None, _NOT_UTF8)
            continue
        arn = text.strip()
        if arn and arn[0] != "#":
            yield Row(number, arn, None)


def _jsonl_rows(stream: io.BufferedIOBase) -> Iterator[Row]:
    """One JSON object a line: {"arn": ..., "tags": {...}}; `ResourceARN` and `Tags` are
    accepted too, and tags may be a map or AWS's [{"Key": ..., "Value": ...}] list."""
    number = 0
    for raw in _physical_lines(stream):
        number += 1
        if raw is None:
            yield Row(number, "", None, _TOO_LONG)
            continue
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            yield Row(number, "", None, _NOT_UTF8)
            continue
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Row(number, "", None, f"bad JSON: {exc.msg} at column {exc.colno}")
            continue
        except RecursionError:
            yield Row(number, "", None, "bad JSON: nested too deeply")
            continue
        yield _json_row(number, record)


def _json_row(number: int, record: object) -> Row:
    if not isinstance(record, dict):
        return Row(number, "", None, f"expected a JSON object, got {type(record).__name__}")
    arn_field = next((f for f in ("arn", "ResourceARN") if f in record), None)
    if arn_field is None:
        return Row(number, "", None, "no 'arn' or 'ResourceARN' field")
    arn = record[arn_field]
    if not isinstance(arn, str):
        return Row(number, "", None, f"field {arn_field!r} is not a string")
    arn = arn.strip()
    if not arn:
        return Row(number, "", None, "empty ARN")
    tags_field = next((f for f in ("tags", "Tags") if f in record), None)
    raw_tags = None if tags_field is None else record[tags_field]
    if raw_tags is None:
        return Row(number, arn, None)
    tags, problem = _json_tags(raw_tags, tags_field or "tags")
    return Row(number, arn, tags, problem)


def _json_tags(raw: object, field: str) -> tuple[dict[str, str] | None, str | None]:
    if isinstance(raw, dict):
        for key, value in raw.items():
            if not isinstance(value, str):
                return None, f"field {field!r}: tag {key!r} has a non-string value {value!r}"
        return raw, None
    if isinstance(raw, list):
        tags: dict[str, str] = {}
        for item in raw:
            if not (
                isinstance(item, dict)
                and isinstance(item.get("Key"), str)
                and isinstance(item.get("Value"), str)
            ):
                return None, (
                    f"field {field!r}: each item must be "
                    f'{{"Key": string, "Value": string}}, got {item!r}'
                )
            if item["Key"] in tags:
                return None, f"field {field!r}: tag {item['Key']!r} is given twice"
            tags[item["Key"]] = item["Value"]
        return tags, None
    return None, (
        f"field {field!r} must be a map of strings or a list of Key/Value objects, "
        f"got {type(raw).__name__}"
    )


def _csv_rows(stream: io.BufferedIOBase, name: str) -> Iterator[Row]:
    """Rows of a CSV file with a header. The ARN column is the first of ARN_COLUMNS present;
    `tag:KEY` / `Tag: KEY` columns give per-row tags, an empty or `(not tagged)` cell none."""
    bad_lines: dict[int, str] = {}  # physical line -> why it was unreadable
    # strict: a quote left open to the end of the file is an error, not one huge last field.
    reader = csv.reader(_decoded_lines(stream, bad_lines), strict=True)
    header: list[str] = []
    for header in reader:
        if header:
            break
    if not header:
        raise SourceError(name, "empty CSV file: expected a header row naming an ARN column")
    header_line = reader.line_num
    if bad_lines:
        raise SourceError(name, f"header {next(iter(bad_lines.values()))}", header_line)
    names = [cell.strip().lower() for cell in header]
    arn_column = next((names.index(c) for c in ARN_COLUMNS if c in names), None)
    if arn_column is None:
        raise SourceError(
            name,
            f"no ARN column in the CSV header: found {', '.join(repr(c) for c in header)}; "
            f"expected one of {', '.join(repr(c) for c in ARN_COLUMNS)}",
            header_line,
        )
    tag_columns = _tag_columns(header, name, header_line)
    width = len(header)
    return _csv_records(reader, bad_lines, arn_column, tag_columns, width)


def _tag_columns(header: list[str], name: str, line: int) -> list[tuple[int, str]]:
    columns: list[tuple[int, str]] = []
    seen: dict[str, str] = {}
    for index, cell in enumerate(header):
        cell = cell.lstrip()
        if cell[:4].lower() != "tag:":
            continue
        key = cell[4:].lstrip()
        if not key:
            raise SourceError(name, f"CSV column {cell!r} names no tag key", line)
        if key in seen:
            raise SourceError(
                name, f"CSV columns {seen[key]!r} and {cell!r} name the same tag key", line
            )
        seen[key] = cell
        columns.append((index, key))
    return columns


def _csv_records(
    reader: Any,
    bad_lines: dict[int, str],
    arn_column: int,
    tag_columns: list[tuple[int, str]],
    width: int,
) -> Iterator[Row]:
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            end = reader.line_num
            span = f"line {start}" if end <= start else f"lines {start}-{end}"
            reason = str(exc)
            if reason.startswith("new-line character seen in unquoted field"):
                reason = "a carriage return inside an unquoted field"  # not the csv module's hint
            yield Row(start, "", None, f"malformed CSV in {span}: {reason}")
            continue
        if bad_lines:
            bad = [bad_lines.pop(n) for n in range(start, reader.line_num + 1) if n in bad_lines]
            if bad:
                yield Row(start, "", None, bad[0])
                continue
        if not record or (len(record) == 1 and not record[0].strip()):
            continue
        if len(record) > width:
            yield Row(
                start,
                "",
                None,
                f"row has {len(record)} fields but the header has {width} (an unquoted comma?)",
            )
            continue
        arn = record[arn_column].strip() if arn_column < len(record) else ""
        tags: dict[str, str] | None = None
        if tag_columns:
            tags = {}
            for index, key in tag_columns:
                if index < len(record):
                    value = record[index]
                    if value and value != NOT_TAGGED:
                        tags[key] = value
        yield Row(start, arn, tags, None if arn else "empty ARN")


def _decoded_lines(stream: io.BufferedIOBase, bad_lines: dict[int, str]) -> Iterator[str]:
    """Lines decoded from UTF-8 for the csv module; an unreadable line is noted in
    `bad_lines` and stands as an empty line so the record holding it can be reported."""
    number = 0
    for raw in _physical_lines(stream):
        number += 1
        if raw is None:
            bad_lines[number] = _TOO_LONG
            yield "\n"
            continue
        try:
            yield raw.decode()
        except UnicodeDecodeError:
            bad_lines[number] = _NOT_UTF8
            yield "\n"
