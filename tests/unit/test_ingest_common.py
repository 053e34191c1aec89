"""Line reading, quarantine reasons, batching and reconciliation shared by every ingest reader."""

from __future__ import annotations

import gzip
import io
from functools import partial
from pathlib import Path

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cprec_core.config import IngestConfig
from cprec_core.ingest import amazon2023
from cprec_core.ingest.common import RawFile, ingest_file, json_records, open_binary
from cprec_core.schema import INTERACTIONS_SCHEMA, QUARANTINE_SCHEMA

CFG = IngestConfig(sources=[], batch_rows=1000)


def _good(i: int) -> bytes:
    return b'{"user_id": "U%d", "parent_asin": "B1", "rating": 4.0, "timestamp": 1550000000000}' % i


def _run(records, cfg: IngestConfig = CFG) -> tuple[list[pa.Table], list[pa.Table], object]:
    raw = RawFile(
        Path("mem.jsonl"), "interactions", "Books", records, partial(amazon2023.parse_review, cfg=cfg)
    )
    good: list[pa.Table] = []
    bad: list[pa.Table] = []
    return good, bad, ingest_file(raw, cfg, good.append, bad.append)


def test_bom_at_file_start_is_a_signature_not_data() -> None:
    # a BOM opening line 1 is stripped; the same bytes on line 2 mean two files were concatenated
    recs = list(json_records(io.BytesIO(b"\xef\xbb\xbf" + _good(1) + b"\n\xef\xbb\xbf" + _good(2) + b"\r\n")))
    assert [r.line for r in recs] == [1, 2]
    assert recs[0].value is not None and recs[0].value["user_id"] == "U1"
    assert recs[1].value is None and "byte-order mark" in recs[1].error


def test_truncated_gzip_keeps_rows_before_the_cut(tmp_path: Path) -> None:
    # 200 lines compressed, then the last 40 bytes of the gzip stream cut off: every complete
    # line that decompresses is kept and exactly one quarantine row names the truncation line.
    data = gzip.compress(b"".join(_good(i) + b"\n" for i in range(200)), mtime=0)
    path = tmp_path / "Books.jsonl.gz"
    path.write_bytes(data[:-40])

    def records():
        with open_binary(path) as f:
            yield from json_records(f)

    good, bad, report = _run(records)
    kept = sum(t.num_rows for t in good)
    assert report.rows_in == kept + 1 and report.quarantined == 1
    assert 150 < kept < 200  # the cut loses only the tail of the stream
    (row,) = pa.concat_tables(bad).to_pylist()
    assert row["line"] == kept + 1 and row["reason"].startswith(f"file truncated at line {kept + 1}")


def test_not_gzip_at_all_is_one_quarantine_row(tmp_path: Path) -> None:
    path = tmp_path / "Books.jsonl.gz"
    path.write_bytes(_good(1) + b"\n")  # plain text with a .gz name

    def records():
        with open_binary(path) as f:
            yield from json_records(f)

    _, bad, report = _run(records)
    assert (report.rows_in, report.kept, report.quarantined) == (1, 0, 1)
    reason = pa.concat_tables(bad)["reason"][0].as_py()
    assert reason.startswith("corrupt gzip stream at line 1: Not a gzipped file")


def test_batches_never_exceed_batch_rows() -> None:
    # bounded memory by design: 2,500 good + 1,200 bad rows with batch_rows=1000 are handed over
    # as tables of 1000, 1000, 500 (good) and 1000, 200 (bad), never as one big list.
    cfg = IngestConfig(sources=[], batch_rows=1000)
    lines = [_good(i) for i in range(2500)] + [b"{broken"] * 1200

    def records():
        return json_records(io.BytesIO(b"\n".join(lines) + b"\n"))

    good, bad, report = _run(records, cfg)
    assert [t.num_rows for t in good] == [1000, 1000, 500]
    assert [t.num_rows for t in bad] == [1000, 200]
    assert good[0].schema == INTERACTIONS_SCHEMA and bad[0].schema == QUARANTINE_SCHEMA
    assert (report.rows_in, report.kept, report.quarantined) == (3700, 2500, 1200)


def test_raw_is_cut_to_2000_characters() -> None:
    long_line = b'{"user_id": "' + b"x" * 5000 + b'"}'  # no parent_asin → quarantined
    _, bad, _ = _run(lambda: json_records(io.BytesIO(long_line)))
    row = pa.concat_tables(bad).to_pylist()[0]
    assert row["reason"] == "field parent_asin: missing" and len(row["raw"]) == 2000


lines_strategy = st.lists(
    st.one_of(
        st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")),
        st.sampled_from(
            [
                _good(1),
                b'{"user_id": "\\ud800", "parent_asin": "B", "timestamp": 1550000000000}',
                b'{"user_id": ["\\udc80"], "parent_asin": "B", "timestamp": 1550000000000}',
                b'{"user_id": "U", "parent_asin": "B", "timestamp": 1550000000000, "rating": "\\ud800"}',
                b"[" * 5000 + b"]" * 5000,
            ]
        ),
        st.builds(
            lambda u, ts, r: (
                b'{"user_id": %s, "parent_asin": "B1", "timestamp": %s, "rating": %s}' % (u, ts, r)
            ),
            st.sampled_from([b'"U"', b"1", b"1.5", b"null", b"true", b"[]", b'""']),
            st.sampled_from(
                [b"1550000000000", b"1e400", b'"2019"', b"-1", b"99999999999999999999999", b"1.5e12"]
            ),
            st.sampled_from([b"5", b"NaN", b"Infinity", b'"5"', b"null", b"1e999", b"0"]),
        ),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=lines_strategy)
def test_any_bytes_are_kept_or_quarantined(lines: list[bytes]) -> None:
    # property: arbitrary lines never crash the amazon2023 path, every line is either a bronze
    # row or a quarantine row, and both come out as valid Arrow tables of their schemas
    payload = b"\n".join(lines) + (b"\n" if lines else b"")
    good, bad, report = _run(lambda: json_records(io.BytesIO(payload)))
    kept = sum(t.num_rows for t in good)
    quarantined = sum(t.num_rows for t in bad)
    assert report.rows_in == len(lines) == kept + quarantined
    lines_seen = sorted(r for t in bad for r in t["line"].to_pylist())
    assert len(set(lines_seen)) == quarantined and all(1 <= n <= len(lines) for n in lines_seen)
