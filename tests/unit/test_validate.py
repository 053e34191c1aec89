"""GX suites: a broken artifact fails with the expectation and sample rows; batches are summed."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from cprec_core.artifacts import write_table
from cprec_core.schema import BRONZE_INTERACTIONS, GOLD_PACKED
from cprec_core.validate import ValidationFailed, validate_artifact

PARAMS = {"min_ts": 100, "max_ts": 10_000, "seq_len": 4}


def _events(ts: list[int], ratings: list[float | None]) -> pa.Table:
    n = len(ts)
    return pa.table(
        {
            "user_id": [f"u{i}" for i in range(n)],
            "item_id": ["i"] * n,
            "ts": ts,
            "rating": ratings,
            "source_line": list(range(1, n + 1)),
            "domain": ["Books"] * n,
        }
    )


def test_clean_artifact_passes_in_batches(tmp_path: Path) -> None:
    write_table(BRONZE_INTERACTIONS, tmp_path, _events([200, 300, 400, 500, 600], [1.0, None, 5.0, 3.0, 2.0]))
    report = validate_artifact(BRONZE_INTERACTIONS, tmp_path, PARAMS, batch_rows=2)
    assert report.success and report.rows == 5 and report.batches == 3
    assert "passed" in report.to_markdown()


def test_frames_are_read_across_files(tmp_path: Path) -> None:
    # three domain partitions of 2 rows, frames of 4: one frame of the first file and half the
    # second, one of the rest (a frame per file would be three)
    events = _events([200, 300, 400, 500, 600, 700], [1.0] * 6)
    events = events.set_column(5, "domain", pa.array(["Books"] * 2 + ["Home"] * 2 + ["Toys"] * 2))
    assert len(write_table(BRONZE_INTERACTIONS, tmp_path, events).files) == 3
    report = validate_artifact(BRONZE_INTERACTIONS, tmp_path, PARAMS, batch_rows=4)
    assert report.success and report.rows == 6 and report.batches == 2
    assert [o.element_count for o in report.outcomes] == [6] * len(report.outcomes)


def test_gx_does_not_fingerprint_the_frames_it_validates(tmp_path: Path, monkeypatch) -> None:
    # cprec turns GX's per-batch MD5 of the frame off (validate._gx); a GX release that stops
    # reading HASH_THRESHOLD would hash again, and this test would say so
    from great_expectations.execution_engine import pandas_execution_engine

    def refuse(df: object) -> str:
        raise AssertionError("GX hashed a validated frame")

    monkeypatch.setattr(pandas_execution_engine, "hash_pandas_dataframe", refuse)
    write_table(BRONZE_INTERACTIONS, tmp_path, _events([200, 300], [1.0, None]))
    assert validate_artifact(BRONZE_INTERACTIONS, tmp_path, PARAMS).success


def test_failure_names_expectation_counts_and_sample_rows(tmp_path: Path) -> None:
    # ts 50 and 20_000 are outside [100, 10_000]; rating 9 is outside [0, 5].
    write_table(BRONZE_INTERACTIONS, tmp_path, _events([50, 300, 20_000], [1.0, 9.0, None]))
    with pytest.raises(ValidationFailed) as err:
        validate_artifact(BRONZE_INTERACTIONS, tmp_path, PARAMS, batch_rows=2)
    msg = str(err.value)
    assert "ExpectColumnValuesToBeBetween(column='ts', min_value=100, max_value=10000): 2 of 3" in msg
    assert "column='rating'" in msg and "1 of 3" in msg
    assert "'ts': 50" in msg  # a sample row is shown
    assert "ExpectColumnValuesToNotBeNull" not in msg  # passing expectations are not reported


def test_packed_blocks_must_have_seq_len_tokens(tmp_path: Path) -> None:
    table = pa.table({"input_ids": pa.array([[1, 2, 3, 4], [5, 6, 7]], pa.list_(pa.int32()))})
    write_table(GOLD_PACKED, tmp_path, table)
    report = validate_artifact(GOLD_PACKED, tmp_path, PARAMS, raise_on_failure=False)
    assert not report.success
    assert report.outcomes[0].unexpected_count == 1


def test_remembered_files_are_not_read_again_and_a_changed_one_is(tmp_path: Path) -> None:
    from cprec_core.artifacts import read_manifest

    two = pa.concat_tables([_events([200, 300], [1.0, 2.0]), _events([400], [3.0])])
    two = two.set_column(5, "domain", pa.array(["Books", "Books", "Toys"]))
    write_table(BRONZE_INTERACTIONS, tmp_path, two)
    first = validate_artifact(BRONZE_INTERACTIONS, tmp_path, PARAMS, remember=True)
    assert (first.rows, first.rows_passed_before) == (3, 0)
    again = validate_artifact(BRONZE_INTERACTIONS, tmp_path, PARAMS, remember=True)
    assert (again.rows, again.batches, again.rows_passed_before) == (0, 0, 3) and again.success
    assert "3 rows in unchanged files passed this suite before" in again.to_markdown()

    # Toys rewritten with a broken row: only its file is read, and the failure is caught
    bad = two.set_column(2, "ts", pa.array([200, 300, 50]))
    write_table(BRONZE_INTERACTIONS, tmp_path, bad)
    assert len(read_manifest(BRONZE_INTERACTIONS, tmp_path).files) == 2
    with pytest.raises(ValidationFailed, match=r"column='ts'.*1 of 1 rows"):
        validate_artifact(BRONZE_INTERACTIONS, tmp_path, PARAMS, remember=True)
    # another suite (other params) trusts nothing it has not checked itself
    other = validate_artifact(BRONZE_INTERACTIONS, tmp_path, {**PARAMS, "min_ts": 10}, remember=True)
    assert (other.rows, other.rows_passed_before) == (3, 0) and other.success
    # without remember nothing is skipped
    assert validate_artifact(BRONZE_INTERACTIONS, tmp_path, {**PARAMS, "min_ts": 10}).rows == 3


def test_the_corpus_suite_reads_lengths_and_names_the_document(tmp_path: Path) -> None:
    from cprec_core.schema import CORPUS_SCHEMA, GOLD_CORPUS

    long = "Books: 1. " + "a very long line of item text " * 20  # 610 characters
    rows = [
        {"doc_id": "d1", "user_id": "u1", "kind": "domain", "domains": ["Books"], "n_items": 1, "text": long},
        {
            "doc_id": "d2",
            "user_id": "u2",
            "kind": "mixed",
            "domains": ["Books"],
            "n_items": 1,
            "text": "short",
        },
    ]
    write_table(GOLD_CORPUS, tmp_path, pa.Table.from_pylist(rows, schema=CORPUS_SCHEMA))
    with pytest.raises(ValidationFailed) as err:
        validate_artifact(GOLD_CORPUS, tmp_path, {"max_items": 20})
    msg = str(err.value)
    # the 5-character text is below 20 characters; the row is named by its key, its text shown cut
    assert "ExpectColumnValuesToBeBetween(column='text_chars', min_value=20" in msg and "1 of 2" in msg
    assert "'doc_id': 'd2'" in msg and "'text': 'short'" in msg and "user_id" not in msg
    ok = [rows[0], {**rows[1], "text": "Books: 1. enough text here"}]
    write_table(GOLD_CORPUS, tmp_path, pa.Table.from_pylist(ok, schema=CORPUS_SCHEMA))
    assert validate_artifact(GOLD_CORPUS, tmp_path, {"max_items": 20}).success
    # the length is the whole text's, not the shown cut's: 610 characters break a 500 maximum
    report = validate_artifact(
        GOLD_CORPUS, tmp_path, {"max_items": 20, "max_doc_chars": 500}, raise_on_failure=False
    )
    assert not report.success and [o.unexpected_count for o in report.outcomes if not o.success] == [1]
