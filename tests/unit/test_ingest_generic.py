"""Generic layout reader (the contract other converters write) on CSV fixtures and Parquet."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cprec_core.config import IngestConfig, SourceConfig
from cprec_core.ingest import generic
from cprec_core.ingest.common import IngestError, ingest_file

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ingest" / "generic"
CFG = IngestConfig(sources=[], batch_rows=1000)


def _read(path: Path, cfg: IngestConfig = CFG) -> dict[str, tuple[object, list[pa.Table], list[dict]]]:
    out = {}
    for f in generic.discover(SourceConfig(format="generic", path=path), cfg):
        good: list[pa.Table] = []
        bad: list[pa.Table] = []
        report = ingest_file(f, cfg, good.append, bad.append)
        out[f.table] = (report, good, [r for t in bad for r in t.to_pylist()])
    return out


def test_csv_interactions_good_and_bad() -> None:
    report, good, bad = _read(FIXTURE)["interactions"]
    assert (report.domain, report.rows_in, report.kept, report.quarantined) == ("Home", 6, 2, 4)
    rows = pa.concat_tables(good).to_pylist()
    assert [(r["user_id"], r["item_id"], r["ts"], r["rating"]) for r in rows] == [
        ("u1", "h1", 1600000000, 5.0),
        ("u1", "h2", 1600000100, None),
    ]
    assert [(r["line"], r["reason"]) for r in bad] == [
        (4, "field timestamp: 1600000000000 s outside [ingest.min_ts=631152000, ingest.max_ts=4102444800]"),
        (5, "field item_id: empty"),
        (6, 'field timestamp: expected int seconds, got "yesterday"'),
        (7, "expected 4 fields, got 2"),  # an unterminated quote swallows the rest of the file
    ]


def test_csv_items_path_category_and_extra() -> None:
    report, good, _ = _read(FIXTURE)["items"]
    rows = pa.concat_tables(good).to_pylist()
    assert report.kept == 2
    assert rows[0] == {
        "item_id": "h1",
        "domain": "Home",
        "title": "Oak Lamp",
        "categories": ["Home", "Lighting", "Lamps"],
        "description": "Warm",
        "extra": '{"color": "brown"}',
    }
    assert rows[1]["categories"] == [] and rows[1]["description"] is None


def test_parquet_contract_in_batches(tmp_path: Path) -> None:
    d = tmp_path / "Garden"
    d.mkdir()
    n = 2500
    pq.write_table(
        pa.table(
            {
                "user_id": [f"u{i % 7}" for i in range(n)],
                "item_id": pa.array([i % 11 for i in range(n)], pa.int64()),  # integer ids accepted
                "timestamp": pa.array([1_600_000_000 + i for i in range(n)], pa.int64()),
                "rating": pa.array([None if i % 2 else 4.5 for i in range(n)], pa.float64()),
            }
        ),
        d / "interactions.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item_id": ["1", "2"],
                "title": ["Fern Pot", None],
                "category": [["Garden", "Pots"], None],  # a list is accepted as the path
                "store": ["Acme", "Acme"],
            }
        ),
        d / "items.parquet",
    )
    out = _read(tmp_path, IngestConfig(sources=[], batch_rows=1000))
    report, good, bad = out["interactions"]
    assert (report.rows_in, report.kept, report.quarantined) == (2500, 2500, 0)
    assert [t.num_rows for t in good] == [1000, 1000, 500] and bad == []
    first = good[0].slice(0, 2).to_pylist()
    assert [(r["item_id"], r["ts"], r["rating"]) for r in first] == [
        ("0", 1_600_000_000, 4.5),
        ("1", 1_600_000_001, None),
    ]
    items = pa.concat_tables(out["items"][1]).to_pylist()
    assert items[0]["categories"] == ["Garden", "Pots"] and items[1]["title"] is None
    assert items[0]["extra"] == '{"store": "Acme"}'


def test_parquet_timestamp_type_becomes_seconds(tmp_path: Path) -> None:
    d = tmp_path / "Garden"
    d.mkdir()
    when = datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC)  # = 1600000000 s
    pq.write_table(
        pa.table(
            {"user_id": ["u"], "item_id": ["i"], "timestamp": pa.array([when], pa.timestamp("ms", tz="UTC"))}
        ),
        d / "interactions.parquet",
    )
    _, good, _ = _read(tmp_path)["interactions"]
    assert good[0]["ts"].to_pylist() == [1_600_000_000]


def test_missing_contract_column_names_the_file(tmp_path: Path) -> None:
    d = tmp_path / "Garden"
    d.mkdir()
    table = pa.table({"shopper": ["u"], "item_id": ["i"], "timestamp": [1]})  # no name it knows for a user
    pq.write_table(table, d / "interactions.parquet")
    (f,) = generic.discover(SourceConfig(format="generic", path=tmp_path), CFG)
    with pytest.raises(IngestError, match=r"interactions.parquet: missing column\(s\) \['user_id'\]"):
        ingest_file(f, CFG, lambda t: None, lambda t: None)


def test_movielens_column_names_map_onto_the_generic_layout(tmp_path: Path) -> None:
    from cprec_core.config import IngestConfig, SourceConfig
    from cprec_core.ingest import generic
    from cprec_core.ingest.common import ingest_file

    folder = tmp_path / "Movies"
    folder.mkdir()
    (folder / "interactions.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,4.0,964982703\n2,10,5,964982931\n"
    )
    (folder / "items.csv").write_text("movieId,title,genres\n10,Toy Story (1995),Animation\n")
    cfg = IngestConfig(sources=[])
    out = {}
    for f in generic.discover(SourceConfig(format="generic", path=tmp_path), cfg):
        good: list = []
        report = ingest_file(f, cfg, good.append, lambda t: None)
        out[f.table] = (report, [r for t in good for r in t.to_pylist()])
    report, rows = out["interactions"]
    assert [(r["user_id"], r["item_id"], r["ts"]) for r in rows] == [
        ("1", "10", 964982703),
        ("2", "10", 964982931),
    ]
    assert report.fields == {"userId": "user_id", "movieId": "item_id"}
    items_report, items = out["items"]
    assert items[0]["title"] == "Toy Story (1995)" and items[0]["categories"] == ["Animation"]
    assert items_report.fields == {"movieId": "item_id", "genres": "category"}


HOSTILE_PARQUET = {
    # string ids, int seconds, float ratings: plain rows column-wise, the rest per row
    "strings": {
        "user_id": ["u1", "u 2", "", "   ", None, "ü3", "x" * 600, "u4", "u5", "u6", "u7", "u8"],
        "item_id": ["i1", "i1", "i1", "i1", "i1", "i1", "i1", None, "i2", "i2", "i2", "i2"],
        "timestamp": pa.array([1_600_000_000] * 8 + [5, None, 1_600_000_000, 1_600_000_000], pa.int64()),
        "rating": pa.array([4.5, None, 1, 1, 1, 1, 1, 1, 1, 1, float("nan"), float("inf")], pa.float64()),
    },
    # integer ids, a timestamp type, integer ratings (one beyond what a float holds exactly)
    "integers": {
        "user_id": pa.array([7, -8, None, 9], pa.int64()),
        "item_id": pa.array([1, 2, 3, 2**63 - 1], pa.int64()),
        "timestamp": pa.array([1_600_000_000_000 + 1000 * i for i in range(3)] + [0], pa.timestamp("ms")),
        "rating": pa.array([5, None, 2**60 + 1, 3], pa.int64()),
    },
    # unsigned seconds beyond int64 and the most negative int64 rating: compared, never cast
    "extremes": {
        "user_id": ["u1", "u2", "u3", "u4"],
        "item_id": ["i1", "i2", "i3", "i4"],
        "timestamp": pa.array([1_600_000_000, 2**63, 2**64 - 1, 1_600_000_000], pa.uint64()),
        "rating": pa.array([-(2**63), 5, None, 4], pa.int64()),
    },
    "float_seconds": {
        "user_id": ["u1", "u2"],
        "item_id": ["i1", "i2"],
        "timestamp": pa.array([1.6e9, 1.6e9 + 0.5], pa.float64()),
    },
    "text_ratings": {
        "user_id": ["u1", "u2", "u3"],
        "item_id": ["i1", "i2", "i3"],
        "timestamp": pa.array([1_600_000_000] * 3, pa.int64()),
        "rating": ["5", None, "good"],
    },
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PARQUET))
def test_parquet_interactions_read_column_wise_equal_the_per_row_reader(tmp_path: Path, name: str) -> None:
    d = tmp_path / "Garden"
    d.mkdir()
    pq.write_table(pa.table(HOSTILE_PARQUET[name]), d / "interactions.parquet")
    cfg = CFG.model_copy(update={"batch_rows": 3})  # rows of both kinds in one batch and across batches
    (f,) = generic.discover(SourceConfig(format="generic", path=tmp_path), cfg)
    assert f.fast is not None

    def read(raw: object) -> tuple[tuple[int, int, int], list[dict], list[dict]]:
        good: list[pa.Table] = []
        bad: list[pa.Table] = []
        report = ingest_file(raw, cfg, good.append, bad.append)
        rows = sorted((r for t in good for r in t.to_pylist()), key=lambda r: r["source_line"])
        quarantined = [r for t in bad for r in t.to_pylist()]
        return (report.rows_in, report.kept, report.quarantined), rows, quarantined

    column_wise, per_row = read(f), read(dataclasses.replace(f, fast=None))
    assert column_wise == per_row
    assert column_wise[0] == COUNTS[name]
    tables = [t for t in f.fast() if isinstance(t, pa.Table)]
    assert sum(t.num_rows for t in tables) == COLUMN_WISE[name]


COUNTS = {  # rows in, kept, quarantined
    "extremes": (4, 2, 2),
    "strings": (12, 3, 9),
    "integers": (4, 2, 2),
    "float_seconds": (2, 1, 1),
    "text_ratings": (3, 1, 2),
}
# rows read column-wise; the rest per row
COLUMN_WISE = {"extremes": 1, "strings": 1, "integers": 2, "float_seconds": 0, "text_ratings": 0}
