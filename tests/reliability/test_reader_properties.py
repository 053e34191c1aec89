"""Property: whatever bytes follow a valid header, every reader (amazon2014, RecBole atomic,
generic CSV) neither crashes nor loses a row: rows_in == kept + quarantined, every output is an
Arrow table of its artifact's schema, and every quarantine row names a line that exists.

The amazon2023 reader has the same property in tests/unit/test_ingest_common.py and the prompt
renderer in tests/unit/test_prompts.py; this file covers the other readers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cprec_core.config import IngestConfig, SourceConfig
from cprec_core.ingest import amazon2014, generic, recbole
from cprec_core.ingest.common import ingest_file
from cprec_core.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, QUARANTINE_SCHEMA

CFG = IngestConfig(sources=[], batch_rows=1000)
SCHEMA = {"interactions": INTERACTIONS_SCHEMA, "items": ITEMS_SCHEMA}

# (format, relative file path, header line or None, plausible lines of that format)
LAYOUTS = [
    (
        "amazon2014",
        "reviews_Books_5.json",
        None,
        [
            b'{"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1400000000}',
            b'{"reviewerID": "A1", "asin": "B1", "overall": "5", "unixReviewTime": 1400000000000}',
            b'{"reviewerID": null, "asin": ["B"], "unixReviewTime": -1}',
        ],
    ),
    (
        "amazon2014",
        "meta_Books.json",
        None,
        [
            b"{'asin': '0001', 'title': 'A {b}', 'categories': [['Books', 'X']]}",
            b"{'asin': '0002', 'categories': 'Books'}",
            b"{'asin': 3, 'title': None, 'description': ['a', 1]}",
            b"{'asin': '0004', 'x': __import__('os').system('touch pwned')}",
        ],
    ),
    (
        "recbole",
        "Games.inter",
        b"user_id:token\titem_id:token\ttimestamp:float\trating:float",
        [b"u1\ti1\t1400000000.5\t5", b"u1\ti2\tnan\t", b"u1\t\t1e400\tx", b"u2\ti3\t-5\t1\textra"],
    ),
    (
        "recbole",
        "Games.item",
        b"item_id:token\ttitle:token_seq\tcategories:token_seq",
        [b"i1\tA title\t'Games', 'PC'", b"i2\t\t['x'", b"i3\t{t}\t__import__('os')"],
    ),
    (
        "generic",
        "Books/interactions.csv",
        b"user_id,item_id,timestamp,rating",
        [b"u1,i1,1400000000,4.5", b'u1,"i,2",1400000000,', b"u1,i1,2019-01-01,x", b'"open,quote', b"a,b"],
    ),
    (
        "generic",
        "Books/items.csv",
        b"item_id,title,category",
        [b"i1,Title,A > B > C", b'i2,"multi\nline",', b"i3,,", b",no id,x"],
    ),
]


def lines_for(plausible: list[bytes]) -> st.SearchStrategy[list[bytes]]:
    return st.lists(
        st.one_of(
            st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")),
            st.sampled_from(plausible),
            st.text(max_size=40).map(lambda t: t.replace("\n", "").encode("utf-8", "surrogatepass")),
        ),
        max_size=25,
    )


def check_layout(fmt: str, rel: str, header: bytes | None, lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        body = [header] if header is not None else []
        payload = b"\n".join([*body, *lines]) + b"\n"
        path.write_bytes(payload)
        reader = {"amazon2014": amazon2014, "recbole": recbole, "generic": generic}[fmt]
        (raw,) = reader.discover(SourceConfig(format=fmt, path=Path(tmp)), CFG)
        good: list[pa.Table] = []
        bad: list[pa.Table] = []
        report = ingest_file(raw, CFG, good.append, bad.append)
    kept = sum(t.num_rows for t in good)
    quarantined = sum(t.num_rows for t in bad)
    assert report.rows_in == kept + quarantined
    assert (report.kept, report.quarantined) == (kept, quarantined)
    assert all(t.schema == SCHEMA[raw.table] for t in good)
    assert all(t.schema == QUARANTINE_SCHEMA for t in bad)
    physical = payload.count(b"\n") + payload.count(b"\r") + 1  # CSV also ends a line at a bare \r
    first = 1 + len(body)
    assert all(first <= n <= physical for t in bad for n in t["line"].to_pylist())
    if fmt != "recbole":  # a RecBole sequence line expands to several events; others are 1:1
        assert report.rows_in <= physical


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_reader_keeps_or_quarantines_every_row(data: st.DataObject) -> None:
    fmt, rel, header, plausible = data.draw(st.sampled_from(LAYOUTS), label="layout")
    check_layout(fmt, rel, header, data.draw(lines_for(plausible), label="lines"))


def test_python_literal_metadata_is_never_executed(tmp_path: Path, monkeypatch) -> None:
    # Amazon 2014 metadata is Python-literal text: it is parsed with ast.literal_eval, so a line
    # holding a call is quarantined, never run.
    monkeypatch.chdir(tmp_path)
    check_layout("amazon2014", "meta_Books.json", None, [LAYOUTS[1][3][3]])
    assert not (tmp_path / "pwned").exists()
