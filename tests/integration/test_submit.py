"""From sources to items in-process, `submit()` on a real SQLite store: refusals that need no
command line (no tags at all, rows without tags beside rows with tags, a bad row after a full
chunk already written, many bad rows summarised) leave nothing behind; per-row CSV and JSONL
tags merged with --tag, untag keys, duplicates across sources counted once. The same messages
through the CLI: tests/e2e/test_submit.py."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from bulktag.app.submit import Request, SubmissionRefused, submit
from bulktag.store import Store
from tests.support.submit import arn, item_rows, refused, write_csv, write_jsonl, write_lines

# -- refused submissions: every message names source, line and reason -------------------------


async def test_tag_with_no_tags_is_refused(tmp_path: Path, db_path: Path) -> None:
    src = write_lines(tmp_path / "a.txt", [arn(1)])
    msg = await refused(db_path, [src], Request("tag"))
    assert msg.startswith("no tags to apply: give --tag KEY=VALUE")


async def test_rows_without_tags_beside_rows_with_tags_are_named(tmp_path: Path,
                                                                  db_path: Path) -> None:
    src = write_csv(tmp_path / "t.csv", ["arn", "tag:Owner"], [[arn(1), "alice"], [arn(2), ""]])
    msg = await refused(db_path, [src], Request("tag"))
    assert f"{src}:3: no tags to apply (give --tag or tag columns)" in msg


async def test_a_bad_row_after_a_full_chunk_still_leaves_nothing(
    tmp_path: Path, db_path: Path
) -> None:
    # The first 10,000 rows are written to the store before the bad one is read.
    src = write_lines(tmp_path / "big.txt", [arn(n) for n in range(10_002)] + ["junk"])
    msg = await refused(db_path, [src], Request("tag", tags={"A": "b"}))
    assert f"{src}:10003: malformed ARN" in msg


async def test_many_bad_rows_are_summarised(tmp_path: Path, db_path: Path) -> None:
    src = write_lines(tmp_path / "bad.txt", [f"bad-{n}" for n in range(25)])
    msg = await refused(db_path, [src], Request("tag", tags={"A": "b"}))
    assert "25 invalid row(s)" in msg
    assert f"{src}:20: malformed ARN" in msg
    assert f"{src}:21:" not in msg
    assert "... and 5 more" in msg


# -- accepted submissions ------------------------------------------------------------------------


async def test_per_row_csv_tags_make_distinct_tagsets_merged_with_tag_flags(
    tmp_path: Path, db_path: Path
) -> None:
    src = write_csv(tmp_path / "t.csv", ["ARN", "tag:Owner", "Tag: CostCenter"], [
        [arn(1), "alice", "42"], [arn(2), "bob", ""], [arn(3), "alice", "42"],
        [arn(4), "(not tagged)", ""]])
    async with await Store.open(db_path) as store:
        result = await submit(store, [str(src)], Request("tag", tags={"Env": "prod",
                                                                       "Owner": "default"}))
    rows = item_rows(db_path, result.job_id)
    bodies = [json.loads(r["body"]) for r in rows]
    assert bodies == [
        {"CostCenter": "42", "Env": "prod", "Owner": "alice"},  # the row's tag wins over --tag
        {"Env": "prod", "Owner": "bob"},
        {"CostCenter": "42", "Env": "prod", "Owner": "alice"},
        {"Env": "prod", "Owner": "default"},
    ]
    with sqlite3.connect(db_path) as con:
        assert con.execute("SELECT count(DISTINCT tagset_id) FROM items").fetchone()[0] == 3
    assert [r["line"] for r in rows] == [2, 3, 4, 5]


async def test_jsonl_tags_and_untag_keys(tmp_path: Path, db_path: Path) -> None:
    src = write_jsonl(tmp_path / "t.jsonl", [
        {"arn": arn(1), "tags": {"Owner": "alice"}},
        {"ResourceARN": arn(2), "Tags": [{"Key": "Owner", "Value": "bob"}]},
        {"arn": arn(3)},
    ])
    async with await Store.open(db_path) as store:
        tagged = await submit(store, [str(src)], Request("tag", tags={"Env": "dev"}))
        untagged = await submit(store, [str(src)], Request("untag", keys=("Env",)))
    assert [json.loads(r["body"]) for r in item_rows(db_path, tagged.job_id)] == [
        {"Env": "dev", "Owner": "alice"}, {"Env": "dev", "Owner": "bob"}, {"Env": "dev"}]
    # For untag, a row's tags name more keys to remove.
    assert [json.loads(r["body"]) for r in item_rows(db_path, untagged.job_id)] == [
        ["Env", "Owner"], ["Env", "Owner"], ["Env"]]


async def test_duplicates_across_sources_are_one_item(tmp_path: Path, db_path: Path) -> None:
    a = write_lines(tmp_path / "a.txt", [arn(1), arn(2), arn(1)])
    b = write_lines(tmp_path / "b.txt", [arn(2), arn(3)])
    async with await Store.open(db_path) as store:
        result = await submit(store, [str(a), str(b)], Request("tag", tags={"A": "b"}))
        assert (result.rows, result.added, result.duplicates) == (5, 3, 2)
        assert (await store.counts(result.job_id)).by_state == {"pending": 3}
        job = await store.get_job(result.job_id)
        assert job is not None and job.state == "ready"
        assert job.options.tags == {"A": "b"}
        assert job.options.sources == [str(a), str(b)]


# -- duplicates with other tags: refused, with their lines (newcomer finding 21.5) --------------

async def test_an_arn_given_again_with_other_tags_is_refused_on_both_stores(
        tmp_path: Path, store_url: str) -> None:
    """The same ARN three times with different tags: the first used to win silently. Now the
    submission is refused naming the rows, on either store, even with --skip-invalid, and
    across chunks (the repeat 12,000 rows after the first); identical repeats are one item."""
    rows = [[arn(1), "a"], [arn(2), "b"], [arn(1), "a"]]  # an identical repeat: harmless
    rows += [[arn(n), "x"] for n in range(100, 12_100)]
    rows += [[arn(1), "c"], [arn(2), "b"], [arn(1), "d"]]
    src = write_csv(tmp_path / "t.csv", ["arn", "tag:team"], rows)
    async with await Store.open(store_url) as store:
        for skip_invalid in (False, True):
            with pytest.raises(SubmissionRefused) as info:
                await submit(store, [str(src)], Request("tag", skip_invalid=skip_invalid))
            msg = str(info.value)
            assert msg.startswith("2 row(s) give a resource again with other tags; nothing "
                                  "was enqueued"), msg
            assert f"{src}:12005: {arn(1)} is given again with other tags than on line 2: " \
                   '{"team":"a"} there, {"team":"c"} here' in msg
            assert f"{src}:12007:" in msg and f"{src}:4:" not in msg and f"{src}:12006" not in msg
            assert await store.list_jobs() == []  # nothing kept
        same = write_csv(tmp_path / "same.csv", ["arn", "tag:team"],
                         [[arn(1), "a"], [arn(1), "a"], [arn(2), "b"]])
        result = await submit(store, [str(same)], Request("tag"))
        assert (result.rows, result.added, result.duplicates) == (3, 2, 1)
