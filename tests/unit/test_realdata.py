"""cprec_core/realdata.py: each research format parsed from tiny hand-made files, then the real sets."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cprec_core.realdata import (
    GENERIC_INTERACTIONS,
    GENERIC_ITEMS,
    ORDINAL,
    RealDataError,
    prepare_realdata,
    read_recbole_sequences,
    read_urllm_sequences,
    split_title_category_brand,
)

T0 = ORDINAL.min_ts  # ingest's ordinal clock: position p is T0 + p seconds
DAY = 1  # one position
RECBOLE_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _fixture(root: Path) -> Path:
    """The four source folders, a few rows each (expected outputs worked out in the tests)."""
    u = root / "amazon2018_urllm_arts_office"
    _write(u / "userlist.txt", "AU1\t0\nAU2\t1\n")
    _write(
        u / "item_listA_F.csv",
        "idBefore,item_title,idAfter,item_attribute\n"
        "7,red paint,0,arts crafts sewing painting\n8,brush set,1,arts crafts sewing brushes\n"
        '9,"canvas, large",2,\n',
    )
    _write(
        u / "item_listO_AA_F.csv",
        "idBefore,item_title,idAfter,item_attribute\n0,stapler,3,office products staplers\n1,pen,4,office\n",
    )
    # user 0: shared history A0 O3, targets O4 (row 1) and A1 (row 2); trailing tab as in the source
    _write(u / "traindata_new.txt", "0\t2\t0|0|0\t3|1|1\t4|2|2\t\n0\t2\t0|0|0\t3|1|1\t1|2|2\t\n")
    # user 1: truncated (starts at pos 5): history A2, targets O4 and A0
    _write(u / "testdata_new.txt", "1\t6\t2|5|5\t4|6|6\t\n1\t6\t2|5|5\t0|6|6\t\n")
    _write(u / "validdata_new.txt", "")
    g = root / "amazon2018_llmrank_games6k"
    _write(g / "Games-6k.item", "item_id:token\ttitle:token_seq\n0\tGame A\n1\tGame B\n2\tGame C  \n")
    _write(g / "Games-6k.test.inter", RECBOLE_HEADER + "0\t0 1\t2\n1\t2\t0\n")
    s = root / "amazon2018_unisrec_scientific"
    _write(s / "Scientific.user2index", "AU2\t0\nAU3\t1\n")
    _write(s / "Scientific.item2index", "B1\t0\nB2\t1\n")
    _write(
        s / "Scientific.text",
        "item_id:token\ttext:token_seq\n"
        "B1\tAcme Beaker 250ml. Industrial & Scientific Lab Products Glassware. Acme. \n"
        "B2\tMr. Heater Hose. . Mr. Heater. \n",
    )
    _write(s / "Scientific.test.inter", RECBOLE_HEADER + "0\t0\t1\n1\t1 0\t1\n")
    o = root / "amazon2014_lrd_office"
    _write(o / "Office.item2index", "X1\t1\nX2\t2\n")
    _write(o / "Office.text", "id\ttext\nX1\tPen Blue Pens Bic\nX2\tPaper A4 Paper Hammermill\n")
    _write(o / "train.csv", "user_id\titem_id\ttime\n1\t1\t1000000000\n1\t2\t1000000000\n")
    _write(o / "dev.csv", "user_id\titem_id\ttime\tneg_items\n1\t1\t1000086400\t[2]\n")
    _write(o / "test.csv", "user_id\titem_id\ttime\tneg_items\n1\t2\t1000086400\t[1]\n")
    return root


def _rows(path: Path) -> list[tuple]:
    t = pq.read_table(path)
    return list(zip(*(t[c].to_pylist() for c in t.column_names), strict=True))


def test_urllm_rows_merge_into_one_mixed_sequence(tmp_path: Path) -> None:
    src = _fixture(tmp_path) / "amazon2018_urllm_arts_office"
    seqs = read_urllm_sequences([src / "traindata_new.txt", src / "testdata_new.txt"])
    # history, then row 1's target at pos_of_last, then row 2's target one position later
    assert seqs == {0: [(0, 0), (3, 1), (4, 2), (1, 3)], 1: [(2, 5), (4, 6), (0, 7)]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0\t2\t0|0|0\t3|1|1\t4|2|2\n0\t2\t0|0|0\t9|1|1\t1|2|2\n", "bad.txt line 2: user 0: history differs"),
        ("0\t1\t0|0|0\t3|1|1\n", "bad.txt line 1: user 0 has one row (expected two); users with one row: 1"),
        ("0\t1\tx|0|0\t3|1|1\n", "bad.txt line 1: field item: expected int, got 'x'"),
        ("0\t2\t0|0|0\t3|2|2\n", "bad.txt line 1: token '3|2|2': pos 2 does not follow 0"),
        ("0\t5\t0|0|0\t3|1|1\n", "bad.txt line 1: pos_of_last 5 != last token's pos 1"),
    ],
)
def test_urllm_format_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RealDataError, match=re.escape(message)):
        read_urllm_sequences([_write(tmp_path / "bad.txt", text)])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # title. path. brand.
        ("Beaker. Industrial & Scientific Lab. Acme. ", ("Beaker", "Industrial & Scientific Lab", "Acme")),
        # no brand
        ("Lid, Gray. Industrial & Scientific Cans. ", ("Lid, Gray", "Industrial & Scientific Cans", None)),
        # the brand itself holds '. '
        ("Hose. Industrial & Scientific X. Mr. Heater.", ("Hose", "Industrial & Scientific X", "Mr. Heater")),
        # empty category path shows as '. . '
        ("Fan, 24 Diameter, 120 Volt. . TPI. ", ("Fan, 24 Diameter, 120 Volt", None, "TPI")),
        # neither marker: all title
        ("Just a title", ("Just a title", None, None)),
    ],
)  # fmt: skip
def test_split_title_category_brand(text: str, expected: tuple) -> None:
    assert split_title_category_brand(text, "Industrial & Scientific") == expected


def test_recbole_full_sequence_is_history_plus_target(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.test.inter", RECBOLE_HEADER + "0\t5 6 7\t8\n1\t9\t5\n")
    assert read_recbole_sequences(path) == {0: [5, 6, 7, 8], 1: [9, 5]}
    with pytest.raises(RealDataError, match=re.escape("x.test.inter line 1: expected header")):
        read_recbole_sequences(_write(path, "0\t5\t6\n"))
    with pytest.raises(
        RealDataError, match=re.escape("x.test.inter line 2: field item_id: expected int, got '6a'")
    ):
        read_recbole_sequences(_write(path, RECBOLE_HEADER + "0\t5\t6a\n"))


def test_prepare_writes_generic_layout(tmp_path: Path) -> None:
    out = tmp_path / "out"
    counts = prepare_realdata(_fixture(tmp_path / "data"), out)

    assert list(counts) == ["Arts", "Office", "Games", "Scientific", "Office2014"]
    for domain in counts:
        assert pq.read_schema(out / domain / "interactions.parquet").remove_metadata() == GENERIC_INTERACTIONS
        assert pq.read_schema(out / domain / "items.parquet").remove_metadata() == GENERIC_ITEMS
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp folders left behind

    # Arts/Office: positions of the merged sequences above, one clock per user for both domains
    assert _rows(out / "Arts" / "interactions.parquet") == [
        ("AU1", "A:0", T0, None),
        ("AU1", "A:1", T0 + 3 * DAY, None),
        ("AU2", "A:2", T0 + 5 * DAY, None),
        ("AU2", "A:0", T0 + 7 * DAY, None),
    ]
    assert _rows(out / "Office" / "interactions.parquet") == [
        ("AU1", "O:3", T0 + DAY, None),
        ("AU1", "O:4", T0 + 2 * DAY, None),
        ("AU2", "O:4", T0 + 6 * DAY, None),
    ]
    assert _rows(out / "Arts" / "items.parquet") == [
        ("A:0", "red paint", "arts crafts sewing painting", None),
        ("A:1", "brush set", "arts crafts sewing brushes", None),
        ("A:2", "canvas, large", None, None),  # quoted CSV comma; empty attribute → null
    ]
    # Games: integer users get the set prefix; full sequence = history + target, one day apart
    assert _rows(out / "Games" / "interactions.parquet") == [
        ("games:0", "G:0", T0, None),
        ("games:0", "G:1", T0 + DAY, None),
        ("games:0", "G:2", T0 + 2 * DAY, None),
        ("games:1", "G:2", T0, None),
        ("games:1", "G:0", T0 + DAY, None),
    ]
    assert _rows(out / "Games" / "items.parquet")[2] == ("G:2", "Game C", None, None)
    # Scientific: raw reviewer ids and asins; AU2 is also an Arts/Office user (the cross-set match)
    assert [r[:3] for r in _rows(out / "Scientific" / "interactions.parquet")] == [
        ("AU2", "B1", T0),
        ("AU2", "B2", T0 + DAY),
        ("AU3", "B2", T0),
        ("AU3", "B1", T0 + DAY),
        ("AU3", "B2", T0 + 2 * DAY),
    ]
    assert _rows(out / "Scientific" / "items.parquet") == [
        ("B1", "Acme Beaker 250ml", "Industrial & Scientific Lab Products Glassware", "Brand: Acme."),
        ("B2", "Mr. Heater Hose", None, "Brand: Mr. Heater."),
    ]
    # Office2014: real day times; same-day events get +0, +1 s in file order (train, dev, test)
    assert [r[:3] for r in _rows(out / "Office2014" / "interactions.parquet")] == [
        ("lrd:1", "X1", 1_000_000_000),
        ("lrd:1", "X2", 1_000_000_001),
        ("lrd:1", "X1", 1_000_086_400),
        ("lrd:1", "X2", 1_000_086_401),
    ]
    assert counts["Arts"] == {
        "users": 2, "items": 3, "catalogue": 3, "interactions": 4, "min_ts": T0, "max_ts": T0 + 7 * DAY,
    }  # fmt: skip
    assert counts["Office"]["interactions"] == 3 and counts["Office"]["items"] == 2


def test_prepare_is_deterministic(tmp_path: Path) -> None:
    data = _fixture(tmp_path / "data")
    prepare_realdata(data, tmp_path / "a")
    prepare_realdata(data, tmp_path / "b")
    for f in sorted((tmp_path / "a").rglob("*.parquet")):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes(), f


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(RealDataError, match="not a directory"):
        prepare_realdata(tmp_path / "nope", tmp_path / "out")
    data = _fixture(tmp_path / "data")
    (data / "amazon2018_llmrank_games6k" / "Games-6k.item").unlink()
    with pytest.raises(RealDataError, match=r"Games-6k.item: file not found"):
        prepare_realdata(data, tmp_path / "out")


@pytest.mark.realdata
def test_real_sets_match_readme_counts(shared_data: Path, tmp_path: Path) -> None:
    counts = prepare_realdata(shared_data, tmp_path)
    # shared/data/README.md "Measured" lines
    assert counts["Arts"]["interactions"] + counts["Office"]["interactions"] == 183_780
    assert (counts["Arts"]["interactions"], counts["Office"]["interactions"]) == (97_681, 86_099)
    assert counts["Arts"]["users"] == 9_577 and counts["Office"]["users"] == 9_565  # 12 users are Arts-only
    assert (counts["Arts"]["catalogue"], counts["Office"]["catalogue"]) == (18_639, 19_757)
    for domain, users, items, inter in [
        ("Games", 50_546, 16_859, 440_264),
        ("Scientific", 8_442, 4_385, 59_384),
        ("Office2014", 4_905, 2_420, 53_258),
    ]:
        assert (counts[domain]["users"], counts[domain]["items"], counts[domain]["interactions"]) == (
            users,
            items,
            inter,
        )
    users = {
        d: set(
            pq.read_table(tmp_path / d / "interactions.parquet", columns=["user_id"])["user_id"].to_pylist()
        )
        for d in ("Arts", "Office", "Scientific")
    }
    assert len(users["Scientific"] & (users["Arts"] | users["Office"])) == 708  # README: shared users


def test_a_broken_line_stops_the_conversion_with_ingests_reason(tmp_path: Path) -> None:
    path = tmp_path / "x.test.inter"
    path.write_bytes(RECBOLE_HEADER.encode() + b"0\t5 6\t7\n1\t9\t\xff5\n")
    with pytest.raises(RealDataError, match=re.escape("x.test.inter line 3: invalid UTF-8 at byte 5")):
        read_recbole_sequences(path)
    path.write_text(RECBOLE_HEADER + "0\t5 6\t7\n\n1\t9\t5\n", encoding="utf-8")  # a blank line is skipped
    assert read_recbole_sequences(path) == {0: [5, 6, 7], 1: [9, 5]}
    path.write_text(RECBOLE_HEADER + "0\t5 6\t7\n0\t9\t5\n", encoding="utf-8")
    with pytest.raises(RealDataError, match=re.escape("x.test.inter line 3: user 0 has a second row")):
        read_recbole_sequences(path)


def test_order_only_sets_follow_ingests_one_ordinal_clock(tmp_path: Path) -> None:
    """A RecBole sequence file converted here gets the times ingest's RecBole reader gives it."""
    from cprec_core.ingest import recbole
    from cprec_core.ingest.common import FieldMap
    from cprec_core.realdata import convert_games

    _write(tmp_path / "Games-6k.item", "item_id:token\ttitle:token_seq\n0\tChess\n1\tGo\n2\tTetris\n")
    inter = _write(tmp_path / "Games-6k.test.inter", RECBOLE_HEADER + "0\t0 1\t2\n1\t2\t0\n")
    table = convert_games(tmp_path)["Games"].interactions
    converted = list(
        zip(*(table.column(c).to_pylist() for c in ("user_id", "item_id", "timestamp")), strict=True)
    )
    fields = FieldMap(recbole.NATIVE, "interactions", {}, str(inter))
    ingested = [
        (f"games:{r.value['user_id']}", f"G:{r.value['item_id']}", r.value["timestamp"])
        for r in recbole.records(inter, fields, ORDINAL)
        if r.value is not None
    ]
    assert converted == ingested
    assert [t for _, _, t in converted] == [T0, T0 + 1, T0 + 2, T0, T0 + 1]
