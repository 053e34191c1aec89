"""Bad raw input through the WHOLE data path (run_ingest → build_behaviors → build_corpus, the
functions the Prefect tasks call): every raw line is accounted for from the raw file to the
corpus, every rejection has a specific reason, and what cannot be processed stops with one clear
line, leaving no artifact a later stage would trust.

The readers' line-level cases are unit-tested in tests/unit/test_ingest_*.py; here they arrive
together in one messy log and are followed downstream.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from cprec_core.artifacts import ArtifactError, read_manifest, read_table, verify
from cprec_core.behaviors import BehaviorsError, build_behaviors
from cprec_core.config import Config, config_from_dict
from cprec_core.corpus import build_corpus
from cprec_core.ingest.common import IngestError
from cprec_core.ingest.run import run_ingest
from cprec_core.schema import (
    BRONZE_INTERACTIONS,
    BRONZE_ITEMS,
    GOLD_CORPUS,
    GOLD_PROBE,
    QUARANTINE,
    SILVER_EVENTS,
    SILVER_ITEMS,
)
from cprec_core.stages import stage_key

T0 = 1_600_000_000_000  # ms, 2020-09-13
HOSTILE_TITLES = {
    "I0": "{user_id} {{domain}} %s $1 {0}",  # template braces and format markers
    "I1": "<b>Bold</b> <script>alert(1)</script> [link](http://x) | a | b |",  # markup
    "I2": "Line one\nLine two\r\nLine\u2028three\x00end",  # newlines and control characters
    "I3": "Long " + "word " * 2000,  # 10,005 characters
}
MAX_TITLE = 40


def review(user: str, item: str, ms: int | str | None, **extra: object) -> bytes:
    return json.dumps(
        {"user_id": user, "parent_asin": item, "rating": 4.0, "timestamp": ms, **extra}
    ).encode()


def good_events(prefix: str) -> list[bytes]:
    """4 users x 4 items; user u meets the items rotated by u, so every item is a TRAIN item of
    some user (leave-one-out: positions 0, 1 train, 2 valid, 3 test)."""
    return [
        review(f"U{u}", f"{prefix}{(u + k) % 4}", T0 + 1000 * (10 * u + k))
        for u in range(4)
        for k in range(4)
    ]


def write_lines(path: Path, lines: list[bytes]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def write_toys(raw: Path) -> None:
    write_lines(raw / "Toys.jsonl", good_events("T"))
    write_lines(
        raw / "meta_Toys.jsonl",
        [json.dumps({"parent_asin": f"T{i}", "title": f"Toy {i}"}).encode() for i in range(4)],
    )


def write_messy_books(raw: Path) -> None:
    good = good_events("I")  # lines 1-16
    lines = [
        *good,
        good[0], good[1], good[2],  # 17-19: the same event logged twice (exact duplicates)
        review("U0", "GHOST", T0 + 9000),  # 20: an item without metadata
        review("U1", "I0", T0 // 1000),  # 21: seconds where ms belong
        review("U1", "I0", 7_258_118_400_000),  # 22: 2200-01-01: out of range
        b'{"user_id": "U1", "parent_asin": ',  # 23: invalid JSON (cut mid-line)
        b'{"user_id": "U\x00", "parent_asin": "I0", "timestamp": 1600000000000}',  # 24: NUL
        b'{"user_id": "U\xff", "parent_asin": "I0", "timestamp": 1600000000000}',  # 25: bad UTF-8
        b"\xef\xbb\xbf" + good[3],  # 26: a BOM inside the file (concatenated files)
        review("U1", "I0", T0, rating="five"),  # 27: string rating
        b'{"user_id": 12.5, "parent_asin": "I0", "timestamp": 1600000000000}',  # 28: float user id
        review(None, "I0", T0),  # 29: null user id
        b"",  # 30: empty line
    ]  # fmt: skip
    write_lines(raw / "Books.jsonl", lines)
    meta = [{"parent_asin": i, "title": t, "categories": ["Books", "{x}"]} for i, t in HOSTILE_TITLES.items()]
    meta.append({"parent_asin": "LONELY", "title": "Never bought by anyone"})  # metadata, no events
    write_lines(raw / "meta_Books.jsonl", [json.dumps(m).encode() for m in meta])


def make_config(tmp: Path, pretrain: list[str], max_bad: float = 0.4, **corpus: object) -> Config:
    return config_from_dict(
        {
            "paths": {"root": str(tmp / "root")},
            "ingest": {
                "sources": [{"format": "amazon2023", "path": str(tmp / "raw")}],
                "max_bad_fraction": max_bad,
            },
            "domains": {"pretrain": pretrain, "downstream": []},
            "behaviors": {"k_core": 2},
            "corpus": {"max_title_chars": MAX_TITLE, "mix_ratio": 0.5, **corpus},
        }
    )


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    (tmp_path / "raw").mkdir()
    return tmp_path / "raw"


def test_messy_log_reconciles_from_raw_line_to_corpus(raw: Path, tmp_path: Path) -> None:
    write_messy_books(raw)
    write_toys(raw)
    cfg = make_config(tmp_path, ["Books", "Toys"])

    ingest = run_ingest(cfg)
    # Books: 30 lines = 16 good + 3 duplicates + 1 GHOST (all kept: valid rows) + 10 rejected
    # (lines 21-30). 10/30 = 33% <= max_bad_fraction 0.4. Books meta: 5 records (4 + LONELY).
    assert ingest["domains"] == {
        "Books": {"interactions": 20, "items": 5, "quarantined": 10},
        "Toys": {"interactions": 16, "items": 4, "quarantined": 0},
    }
    assert (ingest["rows_in"], ingest["kept"], ingest["quarantined"]) == (30 + 5 + 16 + 4, 45, 10)
    assert read_table(BRONZE_INTERACTIONS, cfg.root).num_rows == 36
    assert read_table(BRONZE_ITEMS, cfg.root).num_rows == 9
    reasons = {q["line"]: q["reason"] for q in read_table(QUARANTINE, cfg.root).to_pylist()}
    assert reasons == {
        21: "field timestamp: 1600000000 ms = 1600000 s outside "
        "[ingest.min_ts=631152000, ingest.max_ts=4102444800]",
        22: "field timestamp: 7258118400000 ms = 7258118400 s outside "
        "[ingest.min_ts=631152000, ingest.max_ts=4102444800]",
        23: "invalid JSON: Expecting value at column 34",
        24: "NUL byte at byte 15",
        25: "invalid UTF-8 at byte 15",
        26: "UTF-8 byte-order mark inside the file (concatenated files?)",
        27: 'field rating: expected number, got "five"',
        28: "field user_id: expected string id, got 12.5",
        29: "field user_id: null",
        30: "empty line",
    }

    behaviors = build_behaviors(cfg)
    # dedup: 20 - 3 duplicates = 17; GHOST has no metadata: dropped and counted → 16 = 4 users x 4
    assert behaviors["counts"]["Books"]["dedup"]["n_events"] == 17
    assert behaviors["dropped_without_text"] == {"Books": 1, "Toys": 0}
    events = read_table(SILVER_EVENTS, cfg.root).to_pylist()
    assert sum(e["domain"] == "Books" for e in events) == 16
    items = {(r["domain"], r["item_id"]) for r in read_table(SILVER_ITEMS, cfg.root).to_pylist()}
    assert {i for d, i in items if d == "Books"} == set(HOSTILE_TITLES)  # no GHOST, no LONELY

    build_corpus(cfg)
    docs = read_table(GOLD_CORPUS, cfg.root).to_pylist() + read_table(GOLD_PROBE, cfg.root).to_pylist()
    text = "\n".join(d["text"] for d in docs)
    for d in docs:  # one header line + exactly one line per item, whatever the titles held
        assert len(d["text"].split("\n")) == 1 + d["n_items"], d["text"]
    assert "{user_id} {{domain}} %s $1 {0} ({x})" in text  # braces and markers kept literally
    assert "<script>alert(1)</script>" in text  # markup is text, never interpreted
    assert "Line one Line two Line three end" in text  # newlines/controls became single spaces
    long_lines = [ln for ln in text.split("\n") if "Long word" in ln]
    assert long_lines and all(
        ln.endswith("… ({x})") and len(ln) <= len("[Books] 1. ") + MAX_TITLE + 6 for ln in long_lines
    )
    for absent in ("GHOST", "LONELY", "Never bought", "U0", "12.5"):
        assert absent not in text


def test_empty_files_and_empty_domains(raw: Path, tmp_path: Path) -> None:
    write_toys(raw)
    write_lines(raw / "Books.jsonl", good_events("I"))
    write_lines(
        raw / "meta_Books.jsonl",
        [json.dumps({"parent_asin": f"I{i}", "title": f"Book {i}"}).encode() for i in range(4)],
    )
    (raw / "Garden.jsonl.gz").write_bytes(b"")  # an empty (even not gzip) file: zero rows, no error
    (raw / "meta_Garden.jsonl").write_bytes(b"")
    (raw / "Games.jsonl").write_bytes(b"")  # events file only, no metadata file at all

    summary = run_ingest(make_config(tmp_path, ["Books", "Toys"]))
    files = {
        Path(f["source_file"]).name: (f["rows_in"], f["kept"], f["quarantined"]) for f in summary["files"]
    }
    assert files["Garden.jsonl.gz"] == files["meta_Garden.jsonl"] == files["Games.jsonl"] == (0, 0, 0)
    assert set(summary["domains"]) == {"Books", "Games", "Garden", "Toys"}

    # configured but empty, or configured and absent: a one-line error naming the domain and
    # what bronze has; nothing of silver is written
    for pretrain, missing in (
        (["Books", "Garden"], "domains.pretrain: domain 'Garden' has no rows in"),
        (["Books", "Kitchen"], "domains.pretrain: domain 'Kitchen' has no rows in"),
    ):
        with pytest.raises(BehaviorsError, match=missing) as err:
            build_behaviors(make_config(tmp_path, pretrain))
        assert "(it has: Books, Toys)" in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(ArtifactError):
            verify(SILVER_EVENTS.path(tmp_path / "root"))
    # not configured: an empty domain is simply not used
    cfg = make_config(tmp_path, ["Books", "Toys"])
    build_behaviors(cfg)
    assert build_corpus(cfg)["documents"]["domain"] == {"Books": 4, "Toys": 4}


def test_truncated_gzip_keeps_what_came_before_through_the_pipeline(raw: Path, tmp_path: Path) -> None:
    write_toys(raw)
    write_lines(
        raw / "meta_Books.jsonl",
        [json.dumps({"parent_asin": f"I{i}", "title": f"Book {i}"}).encode() for i in range(4)],
    )
    # 16 good lines + 200 padding users with one event each, then the gzip stream cut short
    padding = [review(f"P{i}", "I0", T0 + i) for i in range(200)]
    data = gzip.compress(b"".join(line + b"\n" for line in good_events("I") + padding), mtime=0)
    (raw / "Books.jsonl.gz").write_bytes(data[:-20])
    cfg = make_config(tmp_path, ["Books", "Toys"], max_bad=0.01)
    summary = run_ingest(cfg)
    (books,) = [f for f in summary["files"] if f["source_file"].endswith("Books.jsonl.gz")]
    assert books["quarantined"] == 1 and books["rows_in"] == books["kept"] + 1 and books["kept"] >= 16
    (q,) = read_table(QUARANTINE, cfg.root).to_pylist()
    assert q["reason"].startswith(f"file truncated at line {books['kept'] + 1}")
    build_behaviors(cfg)  # the 16 good events survive; padding users (1 event) fall to the k-core
    assert sum(e["domain"] == "Books" for e in read_table(SILVER_EVENTS, cfg.root).to_pylist()) == 16


def test_over_max_bad_fraction_fails_and_leaves_no_bronze_to_trust(raw: Path, tmp_path: Path) -> None:
    # A good run first; then the Books log is re-exported with timestamps in SECONDS: every line
    # is out of range (16 of 16 = 100% > 40%). Ingest fails naming the file; the old bronze is
    # removed, so behaviors cannot quietly rebuild from data that no longer matches the logs.
    write_toys(raw)
    write_lines(raw / "Books.jsonl", good_events("I"))
    write_lines(
        raw / "meta_Books.jsonl",
        [json.dumps({"parent_asin": f"I{i}", "title": f"Book {i}"}).encode() for i in range(4)],
    )
    cfg = make_config(tmp_path, ["Books", "Toys"])
    run_ingest(cfg)
    build_behaviors(cfg)
    silver_before = read_manifest(SILVER_EVENTS, cfg.root).fingerprint
    key_before = stage_key("behaviors", cfg)

    seconds = [
        json.loads(line) | {"timestamp": json.loads(line)["timestamp"] // 1000} for line in good_events("I")
    ]
    write_lines(raw / "Books.jsonl", [json.dumps(r).encode() for r in seconds])
    with pytest.raises(
        IngestError,
        match=r"Books.jsonl: 16 of 16 interactions rows \(100.0%\) quarantined > ingest.max_bad_fraction=0.4",
    ) as err:
        run_ingest(cfg)
    assert "\n" not in str(err.value) and "bronze removed" in str(err.value)
    reasons = {q["reason"] for q in read_table(QUARANTINE, cfg.root).to_pylist()}
    assert len(reasons) == 16 and all(" ms = 1600000 s outside [ingest.min_ts" in r for r in reasons)
    for artifact in (BRONZE_INTERACTIONS, BRONZE_ITEMS):
        with pytest.raises(ArtifactError, match="rerun its stage"):
            read_table(artifact, cfg.root)
    with pytest.raises(ArtifactError, match="rerun its stage"):
        build_behaviors(cfg)
    assert stage_key("behaviors", cfg) != key_before  # inputs fingerprint as "missing": no cache hit
    # silver from the last GOOD run is untouched (it still matches the bronze it was built from)
    assert read_manifest(SILVER_EVENTS, cfg.root).fingerprint == silver_before
