"""amazon2023 reader on the hand-made fixture tests/fixtures/ingest/amazon2023 (good and bad lines)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from cprec_core.config import IngestConfig, SourceConfig
from cprec_core.ingest import amazon2023
from cprec_core.ingest.common import IngestError, ingest_file

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ingest" / "amazon2023"
CFG = IngestConfig(sources=[], batch_rows=1000)


def _read(source: SourceConfig) -> dict[str, tuple[object, list[dict], list[dict]]]:
    out = {}
    for f in amazon2023.discover(source, CFG):
        good: list[pa.Table] = []
        bad: list[pa.Table] = []
        report = ingest_file(f, CFG, good.append, bad.append)
        rows = pa.concat_tables(good).to_pylist() if good else []
        out[f.table] = (report, rows, pa.concat_tables(bad).to_pylist() if bad else [])
    return out


def test_reviews_good_and_bad_lines() -> None:
    report, rows, bad = _read(SourceConfig(format="amazon2023", path=FIXTURE))["interactions"]
    # 16 lines: 1-3 valid, 4-16 each broken in one way (see the fixture, line by line)
    assert (report.rows_in, report.kept, report.quarantined) == (16, 3, 13)
    assert rows == [
        {
            "user_id": "U1",
            "item_id": "B1",
            "ts": 1550000000,
            "rating": 5.0,
            "source_line": 1,
            "domain": "Books",
        },
        # 1550000100999 ms → 1550000100 s (floor)
        {
            "user_id": "U1",
            "item_id": "B2",
            "ts": 1550000100,
            "rating": 4.0,
            "source_line": 2,
            "domain": "Books",
        },
        # an integer user id is kept as the string "42"; a null rating stays null
        {
            "user_id": "42",
            "item_id": "B1",
            "ts": 1550000200,
            "rating": None,
            "source_line": 3,
            "domain": "Books",
        },
    ]
    reasons = {r["line"]: r["reason"] for r in bad}
    assert reasons == {
        4: 'field timestamp: expected int ms, got "2019-03-01"',
        5: "field user_id: missing",
        6: 'field rating: expected number, got "five"',
        7: "field user_id: expected string id, got 12.5",
        # seconds written where ms belong: 1550000000 ms = 1550000 s, in 1970
        8: "field timestamp: 1550000000 ms = 1550000 s outside "
        "[ingest.min_ts=631152000, ingest.max_ts=4102444800]",
        9: "invalid JSON: Expecting value at column 34",
        10: "NUL byte at byte 16",
        11: "invalid UTF-8 at byte 15",
        12: "field parent_asin: null",
        13: "UTF-8 byte-order mark inside the file (concatenated files?)",
        14: "expected a JSON object, got list",
        15: "empty line",
        16: "field rating: 9.0 outside [1, 5]",
    }
    assert {r["source_file"] for r in bad} == {str(FIXTURE / "Books.jsonl")}
    raw = {r["line"]: r["raw"] for r in bad}
    assert raw[4].startswith('{"user_id": "U3"') and raw[11].startswith(
        '{"user_id": "U\\xff"'
    )  # bytes kept visible


def test_meta_categories_fallback_description_and_extra() -> None:
    report, rows, bad = _read(SourceConfig(format="amazon2023", path=FIXTURE))["items"]
    assert (report.rows_in, report.kept, report.quarantined) == (4, 2, 2)
    assert rows[0] == {
        "item_id": "B1",
        "domain": "Books",
        "title": "Vintage Oak Lamp",
        "categories": ["Home", "Lighting", "Lamps"],
        "description": "Warm light. Oak base.",  # list joined, paragraphs stripped
        "extra": '{"features": ["LED"], "main_category": "Home", "price": 9.5, "store": "Acme"}',
    }
    # empty categories fall back to [main_category]; an empty description is null
    assert rows[1]["categories"] == ["Home"] and rows[1]["description"] is None
    assert [r["reason"] for r in bad] == [
        'field title: expected string, got ["not", "a", "string"]',
        'field categories: expected list of strings, got "Home"',
    ]


def test_gz_and_plain_twins_are_ambiguous(tmp_path: Path) -> None:
    shutil.copy(FIXTURE / "Books.jsonl", tmp_path / "Books.jsonl")
    shutil.copy(FIXTURE / "Books.jsonl", tmp_path / "Books.jsonl.gz")
    with pytest.raises(
        IngestError, match=r"several interactions files for domain Books \(Books.jsonl, Books.jsonl.gz\)"
    ):
        amazon2023.discover(SourceConfig(format="amazon2023", path=tmp_path), CFG)


def test_invalid_domain_name_needs_rename(tmp_path: Path) -> None:
    shutil.copy(FIXTURE / "Books.jsonl", tmp_path / "Sci-Fi.jsonl")
    with pytest.raises(IngestError, match=r"Sci-Fi.jsonl: domain name 'Sci-Fi'.*ingest.sources\[\].rename"):
        amazon2023.discover(SourceConfig(format="amazon2023", path=tmp_path), CFG)
    (f,) = amazon2023.discover(
        SourceConfig(format="amazon2023", path=tmp_path, rename={"Sci-Fi": "SciFi"}), CFG
    )
    assert f.domain == "SciFi"
    # a domain filter that leaves the file out never checks its name
    assert amazon2023.discover(SourceConfig(format="amazon2023", path=tmp_path, domains=["Books"]), CFG) == []


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="not a directory"):
        amazon2023.discover(SourceConfig(format="amazon2023", path=tmp_path / "nope"), CFG)
