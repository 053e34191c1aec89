"""RecBole atomic-file reader on tests/fixtures/ingest/recbole (event form, sequence form, .item)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from cprec_core.config import IngestConfig, SourceConfig
from cprec_core.ingest import recbole
from cprec_core.ingest.common import IngestError, ingest_file

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ingest" / "recbole"
CFG = IngestConfig(sources=[], batch_rows=1000)


def _read(source: SourceConfig) -> dict[tuple[str, str], tuple[object, list[dict], list[dict]]]:
    out = {}
    for f in recbole.discover(source, CFG):
        good: list[pa.Table] = []
        bad: list[pa.Table] = []
        report = ingest_file(f, CFG, good.append, bad.append)
        rows = pa.concat_tables(good).to_pylist() if good else []
        out[(f.domain, f.table)] = (report, rows, [r for t in bad for r in t.to_pylist()])
    return out


def test_event_form_with_typed_header() -> None:
    report, rows, bad = _read(SourceConfig(format="recbole", path=FIXTURE))[("Games", "interactions")]
    assert (report.rows_in, report.kept, report.quarantined) == (4, 2, 2)
    # timestamp:float 1400000500.7 → 1400000500 s; an empty rating cell is null
    assert [(r["user_id"], r["item_id"], r["ts"], r["rating"]) for r in rows] == [
        ("u1", "i1", 1400000000, 5.0),
        ("u1", "i2", 1400000500, None),
    ]
    # the header is line 1, so the third data row is line 4
    assert [(r["line"], r["reason"]) for r in bad] == [
        (4, 'field timestamp: expected int seconds, got "abc"'),
        (5, "expected 4 tab-separated fields, got 3"),
    ]


def test_sequence_form_expands_with_ordinal_timestamps() -> None:
    report, rows, bad = _read(SourceConfig(format="recbole", path=FIXTURE))[("Sci", "interactions")]
    # s1: history x1 x2 + target x3 → 3 events; s2: empty history + x1 → 1; s3: 2 fields → bad
    assert (report.rows_in, report.kept, report.quarantined) == (5, 4, 1)
    base = CFG.min_ts  # ordinal time: min_ts + position within the line
    assert [(r["user_id"], r["item_id"], r["ts"]) for r in rows] == [
        ("s1", "x1", base),
        ("s1", "x2", base + 1),
        ("s1", "x3", base + 2),
        ("s2", "x1", base),
    ]
    assert bad[0]["line"] == 4


def test_item_file_categories_forms() -> None:
    report, rows, _ = _read(SourceConfig(format="recbole", path=FIXTURE))[("Games", "items")]
    assert report.kept == 2
    # quoted list → its items; 'A > B' → a path; remaining fields → extra
    assert (
        rows[0]["categories"] == ["Video Games", "PC", "Arcade"] and rows[0]["extra"] == '{"brand": "Atari"}'
    )
    assert rows[1]["categories"] == ["Video Games", "Simulation"]


def test_rename_and_filter(tmp_path: Path) -> None:
    (tmp_path / "Games-6k.inter").write_text("user_id:token\titem_id:token\nu\ti\n")
    with pytest.raises(IngestError, match="rename"):
        recbole.discover(SourceConfig(format="recbole", path=tmp_path), CFG)
    out = _read(SourceConfig(format="recbole", path=tmp_path, rename={"Games-6k": "Games6k"}))
    report, rows, _ = out[("Games6k", "interactions")]
    # no timestamp column: ordinal time over the file's data rows
    assert report.kept == 1 and rows[0]["ts"] == CFG.min_ts


def test_bad_header_is_a_file_error(tmp_path: Path) -> None:
    (tmp_path / "X.inter").write_text("user_id item_id\nu i\n")
    (f,) = recbole.discover(SourceConfig(format="recbole", path=tmp_path), CFG)
    with pytest.raises(IngestError, match=r"X.inter line 1: expected a RecBole header"):
        ingest_file(f, CFG, lambda t: None, lambda t: None)


def _ml100k_like(folder: Path, item_header: str, item_rows: list[str]) -> None:
    """A RecBole dataset shaped like its shipped ml-100k: its own column names."""
    folder.mkdir(parents=True, exist_ok=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"u{u}\ti{n}\t4\t{880000000 + 10 * n + u}" for u in range(3) for n in range(3)]
    (folder / "ml.inter").write_text("\n".join(inter) + "\n")
    (folder / "ml.item").write_text("\n".join([item_header, *item_rows]) + "\n")


def test_shipped_recbole_names_are_recognised_and_the_mapping_is_reported(tmp_path: Path) -> None:
    _ml100k_like(
        tmp_path,
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
        [f"i{n}\tToy Story {n}\t1995\tAnimation" for n in range(3)],
    )
    report, rows, bad = _read(SourceConfig(format="recbole", path=tmp_path))[("ml", "items")]
    assert not bad and [r["title"] for r in rows] == ["Toy Story 0", "Toy Story 1", "Toy Story 2"]
    assert rows[0]["categories"] == ["Animation"] and '"release_year"' in rows[0]["extra"]
    assert report.fields == {"movie_title": "title", "class": "categories"}


def test_configured_fields_win_and_a_missing_one_is_a_clear_error(tmp_path: Path) -> None:
    _ml100k_like(
        tmp_path,
        "item_id:token\ttitle:token\tfilm_label:token_seq",
        [f"i{n}\tX{n}\tThe Film {n}" for n in range(3)],
    )
    source = SourceConfig(format="recbole", path=tmp_path, fields={"title": "film_label"})
    report, rows, _ = _read(source)[("ml", "items")]
    assert [r["title"] for r in rows] == ["The Film 0", "The Film 1", "The Film 2"]
    assert report.fields == {"film_label": "title"}
    wrong = SourceConfig(format="recbole", path=tmp_path, fields={"title": "label"})
    with pytest.raises(IngestError, match=r"ml.item: ingest.sources\[\].fields.title='label' is not a field"):
        _read(wrong)


def test_an_unrecognised_title_field_fails_behaviors_naming_the_fields_and_the_key(tmp_path: Path) -> None:
    from cprec_core.behaviors import BehaviorsError, build_behaviors
    from cprec_core.config import Config, DomainsConfig, PathsConfig
    from cprec_core.ingest.run import run_ingest

    _ml100k_like(
        tmp_path / "raw",
        "item_id:token\tfilm_label:token_seq\tgenre_code:token",
        [f"i{n}\tThe Film {n}\tG{n}" for n in range(3)],
    )
    cfg = Config(
        paths=PathsConfig(root=tmp_path / "run"),
        ingest=IngestConfig(sources=[SourceConfig(format="recbole", path=tmp_path / "raw")]),
        domains=DomainsConfig(pretrain=[], downstream=["ml"]),
    )
    run_ingest(cfg)  # every event and item is ingested ...
    with pytest.raises(
        BehaviorsError,
        match=r"domain ml: the text step left 0 events .*3 items, 0 with text \(no title field; "
        r"fields present: film_label, genre_code; map one with ingest.sources\[\].fields.title\)",
    ):
        build_behaviors(cfg)  # ... and the domain does not vanish silently
