"""amazon2014 reader (2014/2018 field names) on tests/fixtures/ingest/amazon2014."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from cprec_core.config import IngestConfig, SourceConfig
from cprec_core.ingest import amazon2014
from cprec_core.ingest.common import IngestError, ingest_file

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ingest" / "amazon2014"
CFG = IngestConfig(sources=[], batch_rows=1000)


def _read(path: Path) -> dict[str, tuple[object, list[dict], list[dict]]]:
    out = {}
    for f in amazon2014.discover(SourceConfig(format="amazon2014", path=path), CFG):
        good: list[pa.Table] = []
        bad: list[pa.Table] = []
        report = ingest_file(f, CFG, good.append, bad.append)
        out[f.table] = (report, pa.concat_tables(good).to_pylist(), [r for t in bad for r in t.to_pylist()])
    return out


def test_reviews_5core_name_gives_the_domain() -> None:
    # reviews_Office_Products_5.json → domain Office_Products (prefix and k-core suffix dropped)
    report, rows, bad = _read(FIXTURE)["interactions"]
    assert (report.domain, report.rows_in, report.kept, report.quarantined) == ("Office_Products", 3, 2, 1)
    assert [(r["user_id"], r["item_id"], r["ts"], r["rating"]) for r in rows] == [
        ("R1", "A1", 1390000000, 5.0),
        ("R2", "A2", 1390086400, 3.0),
    ]
    assert [(r["line"], r["reason"]) for r in bad] == [
        (3, 'field unixReviewTime: expected int seconds, got "01 2, 2014"')
    ]


def test_meta_python_literals_and_2018_json() -> None:
    report, rows, bad = _read(FIXTURE)["items"]
    assert (report.rows_in, report.kept, report.quarantined) == (4, 2, 2)
    # line 1 is a 2014 Python literal: the first category path is kept, the rest goes nowhere
    assert rows[0]["categories"] == ["Office Products", "Office Supplies", "Staplers"]
    assert (rows[0]["description"], rows[0]["extra"]) == ("A red one.", '{"price": 7.99}')
    # line 2 is 2018 JSON: `category` is one path, description a list joined by spaces
    assert rows[1]["categories"] == ["Office Products", "Pens"] and rows[1]["description"] == "Blue ink."
    assert rows[1]["extra"] == '{"brand": "Bic"}'
    assert [(r["line"], r["reason"]) for r in bad] == [
        (3, "field asin: null"),
        (
            4,
            "neither JSON nor a Python literal: "
            "Expecting property name enclosed in double quotes at column 2",
        ),
    ]


def test_gzipped_2018_names(tmp_path: Path) -> None:
    (tmp_path / "Office_Products.json.gz").write_bytes(
        gzip.compress((FIXTURE / "reviews_Office_Products_5.json").read_bytes())
    )
    shutil.copy(FIXTURE / "meta_Office_Products.json", tmp_path / "meta_Office_Products.json")
    out = _read(tmp_path)
    assert out["interactions"][0].kept == 2 and out["items"][0].kept == 2


def test_full_and_5core_reviews_together_are_ambiguous(tmp_path: Path) -> None:
    for name in ("reviews_Books.json", "reviews_Books_5.json"):
        shutil.copy(FIXTURE / "reviews_Office_Products_5.json", tmp_path / name)
    with pytest.raises(IngestError, match="several interactions files for domain Books"):
        amazon2014.discover(SourceConfig(format="amazon2014", path=tmp_path), CFG)
