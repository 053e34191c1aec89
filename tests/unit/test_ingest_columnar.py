"""ingest/columnar.py: Amazon 2023 reviews read column-wise give the same bronze, quarantine and
reconciliation as the per-row reader, line for line, on a file made of every kind of bad line."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pytest

from cprec_core.config import IngestConfig, SourceConfig
from cprec_core.ingest import amazon2014, amazon2023, columnar
from cprec_core.ingest.common import ingest_file

CFG = IngestConfig(sources=[], batch_rows=1000, max_id_chars=20)


def review(user="U1", item="B1", ts=1_550_000_000_000, rating=5.0) -> bytes:
    return json.dumps({"user_id": user, "parent_asin": item, "timestamp": ts, "rating": rating}).encode()


HOSTILE: list[bytes] = [
    review(),
    b"",  # empty line
    b"   \t",  # blank line
    review("U2", "B2", 1_550_000_100_999, 4),  # ms floor; an integer rating
    review("U3", "B3", rating=None),  # a null rating is kept
    b'{"user_id": 42, "parent_asin": "B1", "timestamp": 1550000000000}',  # an integer id is kept as "42"
    review("U 4"),  # an id with a space: left to the per-row reader, which keeps it
    review("Ü5"),  # non-ASCII id: kept by the per-row reader
    review("", "B1"),  # empty id
    review("   ", "B1"),  # blank id
    review("x" * 21),  # id over ingest.max_id_chars
    review(ts=1.55e12),  # an integral float timestamp: kept
    review(ts=1.5e12 + 0.5),  # not integral
    review(ts=-5),  # negative
    review(ts=99_999_999_999_999),  # after ingest.max_ts
    review(rating=7),  # out of bounds
    b'{"user_id": "U6", "parent_asin": "B1", "timestamp": 1550000000000, "rating": NaN}',
    b'{"user_id": "U6", "parent_asin": "B1", "timestamp": 1550000000000, "rating": true}',
    b'{"user_id": "U6", "parent_asin": "B1", "timestamp": 1550000000000, "rating": "5"}',
    b'{"parent_asin": "B1", "timestamp": 1550000000000}',  # missing user
    b'{"user_id": null, "parent_asin": "B1", "timestamp": 1550000000000}',
    b'{"reviewerID": "U7", "parent_asin": "B1", "timestamp": 1550000000000}',  # an alias: kept, renamed
    b'{"user_id": "a", "user_id": "b", "parent_asin": "B1", "timestamp": 1550000000000}',  # duplicate key
    b'{"user_id": "\\ud800", "parent_asin": "B1", "timestamp": 1550000000000}',  # lone surrogate
    b'{"user_id": "U\\u0000", "parent_asin": "B1", "timestamp": 1550000000000}',  # escaped NUL
    b'{"user_id": "U\x00", "parent_asin": "B1", "timestamp": 1550000000000}',  # raw NUL byte
    b'{"user_id": "U\xff", "parent_asin": "B1", "timestamp": 1550000000000}',  # invalid UTF-8
    b"\xef\xbb\xbf" + review("U8"),  # a byte-order mark inside the file
    review("U9") + b" " + review("U10"),  # two objects on one line
    review("U11")[:-1],  # cut short
    b"[1, 2]",
    b'"just a string"',
    b'{"user_id": {"nested": 1}, "parent_asin": "B1", "timestamp": 1550000000000}',
    review("U12") + b"\r",  # CRLF line end
    review("U13", "B9", 1_560_000_000_000, 1.0),
    # what pyarrow reads and the per-row reader does not, outside the fields read
    review("U14")[:-1] + b', "text": "caf\xe9"}',  # invalid UTF-8 in a field not read
    review("U15") + b"\x00",  # a NUL after the object
    review("U16")[:-1] + b', "helpful_vote": Inf}',
    review("U17")[:-1] + b', "helpful_vote": -NaN}',
    review("U18")[:-1] + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # deeper than Python recurses
    review("U19")[:-1] + b', "x": Infinity, "y": NaN}',  # Python reads these: kept either way
    b'{"user_id": "U20", "parent_asin": "B1", "timestamp": 1550000000000, "overall": 7}',  # rating alias
    b'{"user_id": "U21", "parent_asin": "B1", "timestamp": 1550000000000, "stars": 3}',
    b'{"a":',  # an object spanning lines, each of which starts with {
    b'{"b": 1}}',
    review("U22") + b" " + review("U23"),
    review("U24") + b"  ",  # trailing spaces
    b'{"user_id": "U25", "parent_asin": "B1", "timestamp": 1550000000000, "sc\\u006fre": 2}',  # "score"
    review("U26")[:-1] + b', "text": "caf\\u00e9 \\"x\\": y"}',  # escapes in a value: column-wise
]


def read(path: Path, column_wise: bool) -> tuple[tuple[int, int, int], list[dict], list[dict], dict]:
    (raw,) = [f for f in amazon2023.discover(SourceConfig(format="amazon2023", path=path.parent), CFG)]
    if not column_wise:
        raw = dataclasses.replace(raw, fast=None)
    good: list[pa.Table] = []
    bad: list[pa.Table] = []
    report = ingest_file(raw, CFG, good.append, bad.append)
    rows = sorted(pa.concat_tables(good).to_pylist() if good else [], key=lambda r: r["source_line"])
    quarantined = sorted(pa.concat_tables(bad).to_pylist() if bad else [], key=lambda r: r["line"])
    return (report.rows_in, report.kept, report.quarantined), rows, quarantined, report.fields or {}


@pytest.mark.parametrize("block_lines", [1, 4, 7, 65_536])
@pytest.mark.parametrize("chunk_bytes", [37, 16 << 20])  # lines cut across reads, or one read
@pytest.mark.parametrize("gz", [False, True])
def test_column_wise_reviews_equal_the_per_row_reader_on_hostile_lines(
    tmp_path, monkeypatch, block_lines, chunk_bytes, gz
):
    monkeypatch.setattr(columnar, "BLOCK_LINES", block_lines)
    monkeypatch.setattr(columnar, "CHUNK_BYTES", chunk_bytes)
    path = tmp_path / ("Books.jsonl.gz" if gz else "Books.jsonl")
    data = b"\n".join(HOSTILE) + b"\n"
    path.write_bytes(gzip.compress(data) if gz else data)
    fast, slow = read(path, column_wise=True), read(path, column_wise=False)
    assert fast == slow
    counts, rows, _, fields = fast
    assert counts[0] == len(HOSTILE) and counts[1] > 8 and counts[2] > 20  # the file exercises both
    assert {"U1", "U2", "U13", "42", "U 4", "Ü5", "U7", "U19", "U21", "U24"} <= {r["user_id"] for r in rows}
    assert {r["user_id"]: r["rating"] for r in rows}["U21"] == 3.0
    assert {r["user_id"]: r["rating"] for r in rows}["U25"] == 2.0
    assert fields == {"reviewerID": "user_id", "overall": "rating", "stars": "rating", "score": "rating"}
    (raw,) = amazon2023.discover(SourceConfig(format="amazon2023", path=tmp_path), CFG)
    column_wise = sum(t.num_rows for t in raw.fast() if isinstance(t, pa.Table))
    assert column_wise >= 5  # the clean lines around the bad ones still come column-wise


def test_a_truncated_gzip_keeps_the_rows_before_the_break_and_quarantines_the_break(tmp_path, monkeypatch):
    monkeypatch.setattr(columnar, "BLOCK_LINES", 64)
    monkeypatch.setattr(columnar, "CHUNK_BYTES", 4096)  # many blocks come column-wise before the break
    path = tmp_path / "Books.jsonl.gz"
    whole = gzip.compress(
        b"\n".join(review(f"U{n}", ts=1_550_000_000_000 + n) for n in range(20_000)) + b"\n"
    )
    path.write_bytes(whole[: len(whole) * 2 // 3])
    fast, slow = read(path, column_wise=True), read(path, column_wise=False)
    assert fast == slow  # ISA-L loses its last block at the break; the gzip module's re-read does not
    (rows_in, kept, quarantined), _, bad, _ = fast
    assert kept > 10_000 and quarantined == 1 and rows_in == kept + 1
    assert "truncated" in bad[0]["reason"] or "corrupt" in bad[0]["reason"]
    (raw,) = amazon2023.discover(SourceConfig(format="amazon2023", path=tmp_path), CFG)
    assert sum(t.num_rows for t in raw.fast() if isinstance(t, pa.Table)) > 10_000


@pytest.mark.parametrize("damage", ["deflate", "crc"])
def test_a_gzip_damaged_inside_gives_the_per_row_readers_rows_and_reason(tmp_path, monkeypatch, damage):
    # ISA-L reads the blocks; where its stream breaks, the gzip module reads the rest line by line
    monkeypatch.setattr(columnar, "CHUNK_BYTES", 4096)
    data = bytearray(gzip.compress(b"\n".join(review(f"U{n}") for n in range(20_000)) + b"\n", mtime=0))
    at = 200 if damage == "deflate" else len(data) // 2  # a bad code early, or bytes the CRC catches
    data[at : at + 50] = bytes(50)
    path = tmp_path / "Books.jsonl.gz"
    path.write_bytes(bytes(data))
    fast, slow = read(path, column_wise=True), read(path, column_wise=False)
    assert fast == slow
    (rows_in, kept, quarantined), _, bad, _ = fast
    assert rows_in == kept + quarantined and bad[-1]["reason"].startswith("corrupt gzip stream at line")


def test_a_break_the_gzip_module_reaches_first_is_still_quarantined(tmp_path, monkeypatch):
    # zlib drops its last output on a bad block, so the gzip module's re-read can stop before the
    # first line ISA-L did not give: ISA-L's break is then quarantined at that line, nothing is lost
    monkeypatch.setattr(columnar, "CHUNK_BYTES", 4096)
    data = bytearray(gzip.compress(b"\n".join(review(f"U{n}") for n in range(20_000)) + b"\n", mtime=0))
    data[len(data) // 2 : len(data) // 2 + 50] = bytes(50)  # ISA-L reads on to the CRC check
    path = tmp_path / "Books.jsonl.gz"
    path.write_bytes(bytes(data))
    real = columnar.open_binary

    def gzip_module_stops_at_once(p: Path, fast: bool = False):
        return real(p, fast) if fast else io.BytesIO()

    monkeypatch.setattr(columnar, "open_binary", gzip_module_stops_at_once)
    (rows_in, kept, quarantined), _, bad, _ = read(path, column_wise=True)
    assert rows_in == kept + quarantined and kept > 5_000  # the lines before the damage
    assert bad[-1]["line"] == rows_in
    assert bad[-1]["reason"].startswith(f"corrupt gzip stream at line {rows_in}")


@pytest.mark.parametrize("last_newline", [b"\n", b""])
def test_every_row_of_a_clean_file_comes_column_wise(tmp_path, monkeypatch, last_newline):
    monkeypatch.setattr(columnar, "BLOCK_LINES", 32)  # blocks cut from one read, the last one short
    path = tmp_path / "Books.jsonl"
    path.write_bytes(
        b"\n".join(review(f"U{n}", f"B{n % 7}", 1_550_000_000_000 + n) for n in range(100)) + last_newline
    )
    (raw,) = amazon2023.discover(SourceConfig(format="amazon2023", path=tmp_path), CFG)
    assert raw.fast is not None
    tables = [t for t in raw.fast() if isinstance(t, pa.Table)]
    assert [t.num_rows for t in tables][:3] == [32, 32, 32] and sum(t.num_rows for t in tables) == 100
    assert pa.concat_tables(tables)["source_line"].to_pylist() == list(range(1, 101))
    assert read(path, column_wise=True) == read(path, column_wise=False)


def meta(item="B1", title="A title", **more) -> bytes:
    return json.dumps({"parent_asin": item, "title": title, "categories": ["Toys"], **more}).encode()


HOSTILE_META: list[bytes] = [
    b"\xef\xbb\xbf" + meta("B0"),  # a byte-order mark on line 1: an encoding signature, kept
    meta(),
    meta("B2", description=["  first ", "", "second"], store="Maple"),  # paragraphs trimmed and joined
    meta("B1", "A later title"),  # the same item again: bronze keeps both, in file order
    b"",
    b"\xef\xbb\xbf" + meta("B3"),  # a byte-order mark inside the file
    meta("B4")[:-1] + b"\x00}",
    meta("B5")[:-1] + b', "store": "caf\xe9"}',  # invalid UTF-8
    b"[1, 2]",
    meta("B6", 5),  # a title that is not a string
    meta("B7", categories=None)[:-1] + b', "main_category": "Toys"}',
    b'{"parent_asin": "B8", "categories": ["Toys", 3]}',
    b'{"parent_asin": "B9", "name": "Named title", "categories": []}',  # an alias of title: renamed
    b'{"parent_asin": "B10", "title": "\\ud800"}',  # lone surrogate
    meta("B11", extra_field="x" * 300),  # `extra` over ingest.max_text_chars
    meta("B12") + b"\r",
    meta("B13")[:-1] + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # deeper than Python recurses
    meta("B14", price=float("nan")),  # NaN in `extra`: Python writes it back as NaN
    meta("", "no id"),
    meta("B15", "ünïcode", details={"b": 1, "a": [1.5, None]}),
]


def read_items(path: Path, block_wise: bool) -> tuple[tuple[int, int, int], list[dict], list[dict], dict]:
    """Bronze items in the order they were written (items have no source_line: order is the record)."""
    cfg = CFG.model_copy(update={"max_text_chars": 200})
    (raw,) = [f for f in amazon2023.discover(SourceConfig(format="amazon2023", path=path.parent), cfg)]
    assert raw.fast is not None
    if not block_wise:
        raw = dataclasses.replace(raw, fast=None)
    good: list[pa.Table] = []
    bad: list[pa.Table] = []
    report = ingest_file(raw, cfg, good.append, bad.append)
    rows = pa.concat_tables(good).to_pylist() if good else []
    quarantined = pa.concat_tables(bad).to_pylist() if bad else []
    return (report.rows_in, report.kept, report.quarantined), rows, quarantined, report.fields or {}


@pytest.mark.parametrize("block_lines", [1, 3, 65_536])
def test_metadata_read_by_blocks_equals_the_per_row_reader_in_file_order(tmp_path, monkeypatch, block_lines):
    monkeypatch.setattr(columnar, "BLOCK_LINES", block_lines)
    monkeypatch.setattr(columnar, "CHUNK_BYTES", 101)  # lines cut across reads
    path = tmp_path / "meta_Books.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(HOSTILE_META)))  # no newline after the last line
    fast, slow = read_items(path, block_wise=True), read_items(path, block_wise=False)
    assert fast == slow
    (rows_in, kept, quarantined), rows, bad, fields = fast
    assert rows_in == len(HOSTILE_META) and kept == 9 and quarantined == 11
    assert [(r["item_id"], r["title"]) for r in rows][:4] == [
        ("B0", "A title"),
        ("B1", "A title"),
        ("B2", "A title"),
        ("B1", "A later title"),
    ]
    assert [r["item_id"] for r in rows][4:] == ["B7", "B9", "B12", "B14", "B15"]
    by_id = {r["item_id"]: r for r in rows}
    assert by_id["B2"]["description"] == "first second" and by_id["B2"]["extra"] == '{"store": "Maple"}'
    assert by_id["B7"]["categories"] == ["Toys"] and by_id["B9"]["title"] == "Named title"
    assert by_id["B15"]["extra"] == '{"details": {"a": [1.5, null], "b": 1}}'
    assert [r["line"] for r in bad] == [5, 6, 7, 8, 9, 10, 12, 14, 15, 17, 19]
    assert fields == {"name": "title"}
    (raw,) = amazon2023.discover(SourceConfig(format="amazon2023", path=tmp_path), CFG)
    assert raw.fast is not None
    assert sum(t.num_rows for t in raw.fast() if isinstance(t, pa.Table)) >= 5  # not all per row


def review2014(user="A1", item="B1", ts=1_400_000_000, rating=5.0) -> bytes:
    return json.dumps({"reviewerID": user, "asin": item, "unixReviewTime": ts, "overall": rating}).encode()


HOSTILE_2014: list[bytes] = [
    review2014(),
    b"{'reviewerID': 'A2', 'asin': 'B1', 'unixReviewTime': 1400000000, 'overall': 4.0}",  # a Python literal
    review2014("A3", rating=None),
    review2014("A 4"),  # left to the per-row reader, which keeps it
    review2014("A5", ts=5),  # before ingest.min_ts
    review2014("A6", ts=1.4e9),  # an integral float: kept per row
    review2014("A7", rating=9),
    b'{"reviewerID": "A8", "asin": "B1", "unixReviewTime": 1400000000, "rating": 3}',  # an alias of overall
    review2014("A9")[:-1] + b', "vote": "2", "style": {"Size:": " M"}}',  # fields not read
    review2014("A10")[:-1] + b', "helpful": -Inf}',
    b"",
    review2014("A11"),
]


@pytest.mark.parametrize("block_lines", [1, 5, 65_536])
def test_amazon2014_reviews_read_column_wise_equal_the_per_row_reader(tmp_path, monkeypatch, block_lines):
    monkeypatch.setattr(columnar, "BLOCK_LINES", block_lines)
    (tmp_path / "reviews_Books_5.json").write_bytes(b"\n".join(HOSTILE_2014) + b"\n")
    (raw,) = amazon2014.discover(SourceConfig(format="amazon2014", path=tmp_path), CFG)
    assert raw.fast is not None

    def read(f: object) -> tuple[tuple[int, int, int], list[dict], list[dict], dict]:
        good: list[pa.Table] = []
        bad: list[pa.Table] = []
        report = ingest_file(f, CFG, good.append, bad.append)
        rows = sorted((r for t in good for r in t.to_pylist()), key=lambda r: r["source_line"])
        quarantined = [r for t in bad for r in t.to_pylist()]
        return (report.rows_in, report.kept, report.quarantined), rows, quarantined, report.fields or {}

    fast, slow = read(raw), read(dataclasses.replace(raw, fast=None))
    assert fast == slow
    counts, rows, bad, fields = fast
    assert counts == (12, 8, 4) and fields == {"rating": "overall"}
    assert [r["user_id"] for r in rows] == ["A1", "A2", "A3", "A 4", "A6", "A8", "A9", "A11"]
    assert [r["line"] for r in bad] == [5, 7, 10, 11]
    assert sum(t.num_rows for t in raw.fast() if isinstance(t, pa.Table)) >= 3  # A1, A3, A11 at least
