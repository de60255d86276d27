"""Sources read from real files in tmp_path (and BytesIO for stdin), plain and gzipped."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulktag.sources import (
    MAX_LINE_BYTES,
    Row,
    SourceError,
    open_rows,
    read_chunks,
    source_name,
)

A = "arn:aws:ec2:us-east-1:123456789012:instance/i-0a"
B = "arn:aws:s3:::bucket-b"
C = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/x:*"


def write(path: Path, data: str | bytes, *, gz: bool = False) -> Path:
    raw = data.encode() if isinstance(data, str) else data
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def rows(path: Path | str, **kwargs: object) -> list[Row]:
    return list(open_rows(path, **kwargs))  # type: ignore[arg-type]


def lines_and_arns(result: list[Row]) -> list[tuple[int, str]]:
    return [(r.line, r.arn) for r in result]


# --- text --------------------------------------------------------------------------------------

TEXT = f"\ufeff# exported 2024-05-01\r\n{A}\r\n\r\n   \n  # {B}\n  {B}  \n\t{C}\r\n"


@pytest.mark.parametrize("gz", [False, True])
def test_text_skips_comments_and_blank_lines_and_keeps_line_numbers(
    tmp_path: Path, gz: bool
) -> None:
    path = write(tmp_path / ("arns.txt.gz" if gz else "arns.txt"), TEXT, gz=gz)
    result = rows(path)
    assert lines_and_arns(result) == [(2, A), (6, B), (7, C)]
    assert all(r.tags is None and r.problem is None for r in result)


def test_text_without_trailing_newline(tmp_path: Path) -> None:
    assert lines_and_arns(rows(write(tmp_path / "a", f"{A}\n{B}"))) == [(1, A), (2, B)]


def test_empty_file_has_no_rows(tmp_path: Path) -> None:
    assert rows(write(tmp_path / "empty.txt", "")) == []
    assert rows(write(tmp_path / "empty.jsonl.gz", "", gz=True)) == []


def test_gzip_is_detected_by_magic_bytes_whatever_the_name(tmp_path: Path) -> None:
    path = write(tmp_path / "arns.dat", f"{A}\n", gz=True)
    assert lines_and_arns(rows(path)) == [(1, A)]


def test_stdin_text_and_gzip() -> None:
    plain = io.BytesIO(TEXT.encode())
    assert lines_and_arns(rows("-", stdin=plain)) == [(2, A), (6, B), (7, C)]
    packed = io.BytesIO(gzip.compress(TEXT.encode()))
    assert lines_and_arns(rows("-", stdin=packed)) == [(2, A), (6, B), (7, C)]


def test_stdin_with_a_format() -> None:
    data = io.BytesIO(gzip.compress(f'{{"arn": "{A}", "tags": {{"k": "v"}}}}\n'.encode()))
    assert rows("-", fmt="jsonl", stdin=data) == [Row(1, A, {"k": "v"})]


def test_stdin_is_not_closed() -> None:
    stdin = io.BytesIO(f"{A}\n".encode())
    rows("-", stdin=stdin)
    assert not stdin.closed


def test_text_line_with_invalid_utf8_is_a_problem_row(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", f"{A}\n".encode() + b"arn:\xff\n" + f"{B}\n".encode())
    assert rows(path) == [
        Row(1, A, None),
        Row(2, "arn:\\xff", None, "line is not valid UTF-8"),
        Row(3, B, None),
    ]


def test_overlong_line_is_a_problem_row_and_reading_goes_on(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", f"{A}\n" + "x" * (MAX_LINE_BYTES + 10) + f"\n{B}\n")
    assert rows(path) == [
        Row(1, A, None),
        Row(2, "", None, f"line is longer than {MAX_LINE_BYTES} bytes"),
        Row(3, B, None),
    ]


def test_format_overrides_the_file_name(tmp_path: Path) -> None:
    path = write(tmp_path / "arns.txt", f"arn,other\n{A},x\n")
    assert lines_and_arns(rows(path, fmt="csv")) == [(2, A)]


def test_unknown_format_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown source format 'xml'"):
        open_rows(write(tmp_path / "a", A), fmt="xml")


# --- CSV ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["arn", "ResourceARN", "Resource ARN", " Identifier "])
@pytest.mark.parametrize("gz", [False, True])
def test_csv_arn_column_names(tmp_path: Path, column: str, gz: bool) -> None:
    data = f"Service,{column}\r\nec2,{A}\r\n\r\ns3, {B} \r\n"
    path = write(tmp_path / ("r.csv.gz" if gz else "r.csv"), data, gz=gz)
    assert rows(path) == [Row(2, A, None), Row(4, B, None)]


def test_csv_prefers_arn_over_identifier(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", f"Identifier,ARN\ni-0a,{A}\n")
    assert lines_and_arns(rows(path)) == [(2, A)]


def test_csv_tag_editor_export(tmp_path: Path) -> None:
    data = (
        "\ufeffIdentifier,Tag: Name,Service,Type,Region,Tags,ARN,tag:cost center,TAG:env\n"
        f"i-0a,web,EC2,Instance,us-east-1,2,{A},(not tagged),prod\n"
        f"bucket-b,(not tagged),S3,Bucket,global,0,{B},,\n"
        f'x,"a, quoted\nvalue",Logs,LogGroup,us-east-1,1,{C},R&D 1,\n'
    )
    for gz in (False, True):
        path = write(tmp_path / ("export.csv.gz" if gz else "export.csv"), data, gz=gz)
        assert rows(path) == [
            Row(2, A, {"Name": "web", "env": "prod"}),
            Row(3, B, {}),
            Row(4, C, {"Name": "a, quoted\nvalue", "cost center": "R&D 1"}),
        ]


def test_csv_record_after_a_multiline_field_has_its_own_line(tmp_path: Path) -> None:
    data = f'arn,tag:note\n{A},"one\ntwo\nthree"\n{B},x\n'
    assert lines_and_arns(rows(write(tmp_path / "r.csv", data))) == [(2, A), (5, B)]


def test_csv_empty_arn_cell(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", f"arn,tag:env\n ,prod\n{A},dev\n")
    assert rows(path) == [Row(2, "", {"env": "prod"}, "empty ARN"), Row(3, A, {"env": "dev"})]


def test_csv_short_row_means_empty_cells(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", f"arn,tag:env\n{A}\nx-only\n")
    assert rows(path) == [Row(2, A, {}), Row(3, "x-only", {})]


def test_csv_row_with_too_many_fields_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", f"arn,tag:env\n{A},a,b\n{B},c\n")
    assert rows(path) == [
        Row(2, "", None, "row has 3 fields but the header has 2 (an unquoted comma?)"),
        Row(3, B, {"env": "c"}),
    ]


def test_csv_invalid_utf8_line_is_a_problem_row(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", f"arn\n{A}\n".encode() + b"\xff\xfe\n" + f"{B}\n".encode())
    assert rows(path) == [
        Row(2, A, None),
        Row(3, "", None, "line is not valid UTF-8"),
        Row(4, B, None),
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            f"{A},x\ry\n{B},z\n",
            [
                Row(
                    2,
                    "",
                    None,
                    "malformed CSV in line 2: a carriage return inside an unquoted field",
                ),
                Row(3, B, {"t": "z"}),
            ],
        ),
        (
            f'{A},"x"y\n{B},z\n',
            [
                Row(2, "", None, "malformed CSV in line 2: ',' expected after '\"'"),
                Row(3, B, {"t": "z"}),
            ],
        ),
        (
            f'{A},"never closed\n{B},z\n',
            [Row(2, "", None, "malformed CSV in lines 2-3: unexpected end of data")],
        ),
        (
            f"{A},{'v' * 200_000}\n{B},z\n",
            [
                Row(2, "", None, "malformed CSV in line 2: field larger than field limit (131072)"),
                Row(3, B, {"t": "z"}),
            ],
        ),
    ],
)
def test_csv_malformed_records_are_problem_rows(
    tmp_path: Path, body: str, expected: list[Row]
) -> None:
    assert rows(write(tmp_path / "r.csv", "arn,tag:t\n" + body)) == expected


def test_csv_without_arn_column_names_the_columns_found(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "\n\nname,region\nx,y\n")
    with pytest.raises(SourceError) as info:
        open_rows(path)
    error = info.value
    assert error.line == 3
    assert str(error).startswith(
        f"{path}:3: no ARN column in the CSV header: found 'name', 'region'"
    )
    assert "'resourcearn'" in str(error)


def test_gzipped_csv_without_arn_column(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv.gz", "name\nx\n", gz=True)
    with pytest.raises(SourceError, match="no ARN column"):
        open_rows(path)


def test_empty_csv_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="empty CSV file"):
        open_rows(write(tmp_path / "r.csv", "\n\n"))


def test_csv_duplicate_tag_columns_are_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="'tag:Name' and 'Tag: Name' name the same tag key"):
        open_rows(write(tmp_path / "r.csv", "arn,tag:Name,Tag: Name\n"))


def test_csv_tag_column_without_key_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="CSV column 'tag: ' names no tag key"):
        open_rows(write(tmp_path / "r.csv", "arn,tag: \n"))


# --- JSONL -------------------------------------------------------------------------------------

JSONL = (
    f'{{"arn": "{A}", "tags": {{"env": "prod", "team": ""}}}}\n'
    "\n"
    f'{{"ResourceARN": " {B} ", "Tags": [{{"Key": "Name", "Value": "b"}}]}}\r\n'
    f'{{"arn": "{C}"}}\n'
    f'{{"arn": "{C}", "tags": null}}\n'
)


@pytest.mark.parametrize("name", ["r.jsonl", "r.ndjson", "r.jsonl.gz", "R.NDJSON.GZ"])
def test_jsonl_map_and_list_tags(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, JSONL, gz=name.lower().endswith(".gz"))
    assert rows(path) == [
        Row(1, A, {"env": "prod", "team": ""}),
        Row(3, B, {"Name": "b"}),
        Row(4, C, None),
        Row(5, C, None),
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "{bad",
            Row(
                1,
                "",
                None,
                "bad JSON: Expecting property name enclosed in double quotes at column 2",
            ),
        ),
        ('["arn"]', Row(1, "", None, "expected a JSON object, got list")),
        ('"arn:aws:s3:::b"', Row(1, "", None, "expected a JSON object, got str")),
        ('{"tags": {}}', Row(1, "", None, "no 'arn' or 'ResourceARN' field")),
        ('{"arn": 5}', Row(1, "", None, "field 'arn' is not a string")),
        ('{"ResourceARN": null}', Row(1, "", None, "field 'ResourceARN' is not a string")),
        ('{"arn": "  "}', Row(1, "", None, "empty ARN")),
        (
            f'{{"arn": "{B}", "tags": {{"n": 1}}}}',
            Row(1, B, None, "field 'tags': tag 'n' has a non-string value 1"),
        ),
        (
            f'{{"arn": "{B}", "tags": "env=prod"}}',
            Row(
                1,
                B,
                None,
                "field 'tags' must be a map of strings or a list of Key/Value objects, got str",
            ),
        ),
        (
            f'{{"arn": "{B}", "Tags": [{{"Key": "k"}}]}}',
            Row(
                1,
                B,
                None,
                """field 'Tags': each item must be {"Key": string, "Value": string}, """
                "got {'Key': 'k'}",
            ),
        ),
        (
            (
                f'{{"arn": "{B}", "Tags": '
                '[{"Key": "k", "Value": "a"}, {"Key": "k", "Value": "b"}]}'
            ),
            Row(1, B, None, "field 'Tags': tag 'k' is given twice"),
        ),
    ],
)
def test_jsonl_row_problems(tmp_path: Path, line: str, expected: Row) -> None:
    assert rows(write(tmp_path / "r.jsonl", line + "\n")) == [expected]


def test_jsonl_problems_keep_their_line_numbers(tmp_path: Path) -> None:
    data = f'{{"arn": "{A}"}}\n\n{{oops\n{{"arn": "{B}"}}\n'.encode() + b'{"arn": "\xff"}\n'
    result = rows(write(tmp_path / "r.jsonl", data))
    assert [(r.line, r.arn, r.problem is None) for r in result] == [
        (1, A, True),
        (3, "", False),
        (4, B, True),
        (5, "", False),
    ]
    assert result[3].problem == "line is not valid UTF-8"


# --- whole-source errors -----------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"
    with pytest.raises(SourceError) as info:
        open_rows(path)
    assert str(info.value) == f"{path}: No such file or directory"
    assert info.value.source == str(path) and info.value.line is None


def test_directory_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="Is a directory"):
        open_rows(tmp_path)


def test_truncated_gzip_names_the_line_reached(tmp_path: Path) -> None:
    packed = gzip.compress("".join(f"{A}{i}\n" for i in range(100_000)).encode())
    path = write(tmp_path / "arns.txt.gz", packed[: len(packed) // 2])
    result: list[Row] = []
    with pytest.raises(SourceError) as info:
        for row in open_rows(path):
            result.append(row)
    assert result and info.value.line == result[-1].line + 1
    assert "corrupt or truncated gzip data" in str(info.value)
    assert str(info.value).startswith(f"{path}:")


def test_corrupt_gzip_header(tmp_path: Path) -> None:
    path = write(tmp_path / "arns.gz", b"\x1f\x8b\x00garbage garbage garbage")
    with pytest.raises(SourceError, match="corrupt or truncated gzip data"):
        rows(path)


def test_corrupt_gzip_on_stdin() -> None:
    with pytest.raises(SourceError, match=r"^<stdin>:1: corrupt or truncated gzip data"):
        rows("-", stdin=io.BytesIO(b"\x1f\x8b\x08\x00\x00\x00\x00\x00garbage"))


def test_corrupt_gzipped_csv_fails_on_opening(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="corrupt or truncated gzip data"):
        open_rows(write(tmp_path / "r.csv.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00garbage"))


def test_file_named_gz_that_is_not_gzip(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="named .gz but is not gzip data"):
        open_rows(write(tmp_path / "arns.txt.gz", f"{A}\n"))


def test_source_name() -> None:
    assert source_name("-") == "<stdin>"
    assert source_name("arns.csv") == "arns.csv"
    assert source_name(Path("a/b.txt")) == "a/b.txt"


# --- chunks ------------------------------------------------------------------------------------


def test_read_chunks(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "".join(f"{A}{i}\n" for i in range(7)))
    chunks = list(read_chunks(open_rows(path), 3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert [r.line for c in chunks for r in c] == list(range(1, 8))
    with pytest.raises(ValueError, match="at least 1"):
        next(read_chunks(iter([]), 0))


# --- property ----------------------------------------------------------------------------------

line_text = st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=40)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(line_text, max_size=30), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_text_yields_exactly_the_stripped_non_comment_lines(
    tmp_path: Path, lines: list[str], ending: str, gz: bool
) -> None:
    path = write(tmp_path / "prop.txt", "".join(line + ending for line in lines), gz=gz)
    expected = [
        (number, line.strip())
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.strip().startswith("#")
    ]
    assert lines_and_arns(rows(path)) == expected
