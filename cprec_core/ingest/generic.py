"""Reader for cprec's generic layout: one folder per domain of Parquet or CSV tables.

THE CONTRACT (converters for real data write exactly this, as Parquet):

    <path>/<Domain>/interactions.parquet | interactions.csv
        user_id    string (integers accepted)   required
        item_id    string (integers accepted)   required
        timestamp  int64 seconds since epoch, UTC (a Parquet timestamp type is accepted too)
        rating     float, optional column, null allowed
    <path>/<Domain>/items.parquet | items.csv
        item_id      string                      required
        title        string                      required column, null allowed
        category     string path 'General > Sub > Leaf' (or list<string>), optional column
        description  string, optional column
        any other column → bronze `extra` (JSON)

Reads: those files, in batches of `ingest.batch_rows` rows.
Writes (through ingest/common.py): rows of BRONZE_INTERACTIONS and BRONZE_ITEMS; broken rows to
QUARANTINE. DESIGN.md data flow step 1. Line numbers are 1-based data rows (Parquet) or
physical lines (CSV, header = line 1).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cprec_core.config import IngestConfig, SourceConfig
from cprec_core.ingest.columnar import mask, null_or_within, plain_ids, within
from cprec_core.ingest.common import (
    FieldMap,
    IngestError,
    RawFile,
    Record,
    RowError,
    Table,
    check_ts,
    domain_for,
    extra_json,
    opt_rating,
    opt_text,
    req_id,
    req_int,
    show,
    str_list,
    unique_files,
)

REQUIRED: dict[Table, tuple[str, ...]] = {
    "interactions": ("user_id", "item_id", "timestamp"),
    "items": ("item_id", "title"),
}
ITEM_FIELDS = {"item_id", "title", "category", "description"}
NATIVE = {
    "interactions": {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "rating": "rating"},
    "items": {"item": "item_id", "title": "title", "categories": "category", "description": "description"},
}
INT = re.compile(r"^\s*-?\d+\s*$")


def _require(path: Path, table: Table, columns: list[str]) -> None:
    missing = [c for c in REQUIRED[table] if c not in columns]
    if missing:
        raise IngestError(
            f"{path}: missing column(s) {missing} of the generic layout "
            f"(needs {list(REQUIRED[table])}, has {columns}; see cprec_core/ingest/generic.py)"
        )


def _seconds(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Parquet timestamp columns become int64 seconds, as the contract's int column is."""
    i = batch.schema.get_field_index("timestamp")
    if i < 0 or not pa.types.is_timestamp(batch.schema.field(i).type):
        return batch
    seconds = pc.cast(pc.cast(batch.column(i), pa.timestamp("s")), pa.int64())
    return batch.set_column(i, "timestamp", seconds)


def _batches(
    path: Path, table: Table, fields: FieldMap, cfg: IngestConfig
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(number of its first row, batch) per cfg.batch_rows rows of a Parquet file, in this reader's
    field names and with timestamps in seconds."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise IngestError(f"{path}: not a readable Parquet file ({e})") from None
    names = fields.rename_names(pf.schema_arrow.names)
    _require(path, table, names)
    first = 1
    for batch in pf.iter_batches(batch_size=cfg.batch_rows):
        yield first, _seconds(batch.rename_columns(names))
        first += batch.num_rows


def parquet_records(path: Path, table: Table, fields: FieldMap, cfg: IngestConfig) -> Iterator[Record]:
    """One Record per Parquet row, read in batches of cfg.batch_rows, in this reader's field names."""
    for first, batch in _batches(path, table, fields, cfg):
        for row, value in enumerate(batch.to_pylist(), start=first):
            yield Record(row, value, None, value)


def fast_parquet_interactions(path: Path, fields: FieldMap, cfg: IngestConfig) -> Iterator[Record | pa.Table]:
    """An interactions Parquet file read column-wise (the contract of ingest/columnar.py): per batch,
    the rows parse_interaction certainly keeps unchanged as one table (bronze columns +
    source_line), then every other row as the Record parquet_records gives it."""
    for first, batch in _batches(path, "interactions", fields, cfg):
        ok = _plain_interactions(batch, cfg)
        rows = np.arange(first, first + batch.num_rows, dtype=np.int64)
        if ok.any():
            kept = _interaction_columns(batch.filter(pa.array(ok)))
            yield kept.append_column("source_line", pa.array(rows[ok]))
        others = batch.filter(pa.array(~ok)).to_pylist()
        for row, value in zip(rows[~ok].tolist(), others, strict=True):
            yield Record(row, value, None, value)


def _plain_interactions(batch: pa.RecordBatch, cfg: IngestConfig) -> np.ndarray:
    """The rows parse_interaction and the size checks keep as they are: plain ids, integer seconds
    within [min_ts, max_ts], a rating that is null or a finite number (an integer exactly a
    float). A column of another type leaves all its rows to the per-row reader."""
    cap = cfg.max_id_chars
    ok = plain_ids(batch.column("user_id"), cap) & plain_ids(batch.column("item_id"), cap)
    ts = batch.column("timestamp")
    if not pa.types.is_integer(ts.type):
        return np.zeros(batch.num_rows, dtype=bool)
    ok &= within(ts, cfg.min_ts, cfg.max_ts)
    if "rating" not in batch.schema.names:
        return ok
    rating = batch.column("rating")
    if pa.types.is_floating(rating.type):
        return ok & mask(pc.or_kleene(pc.is_null(rating), pc.is_finite(rating)))
    if pa.types.is_integer(rating.type):
        return ok & null_or_within(rating, -(2**53), 2**53)
    return ok & pa.types.is_null(rating.type)


def _interaction_columns(batch: pa.RecordBatch) -> pa.Table:
    """Rows _plain_interactions accepted as bronze columns: user_id, item_id, ts, rating."""
    has_rating = "rating" in batch.schema.names
    rating = batch.column("rating") if has_rating else pa.nulls(batch.num_rows, pa.float64())
    return pa.table(
        {
            "user_id": pc.cast(batch.column("user_id"), pa.string()),
            "item_id": pc.cast(batch.column("item_id"), pa.string()),
            "ts": pc.cast(batch.column("timestamp"), pa.int64()),
            "rating": pc.cast(rating, pa.float64()),
        }
    )


def _csv_value(name: str, text: str | None) -> Any:
    """CSV cells are text: numbers in timestamp/rating are read, '' in optional cells is null."""
    if text is None or (text == "" and name not in ("user_id", "item_id")):
        return None
    if name == "timestamp" and INT.match(text):
        return int(text)
    if name == "rating":
        try:
            return float(text)
        except ValueError:
            return text
    return text


def csv_records(path: Path, table: Table, fields: FieldMap) -> Iterator[Record]:
    """One Record per CSV row, in this reader's field names; undecodable bytes are kept (as
    surrogates) for the parser to reject."""
    with open(path, "rb") as raw_file:
        text_file = io.TextIOWrapper(raw_file, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text_file)
        header = fields.rename_names(next(reader, []))
        _require(path, table, header)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield Record(reader.line_num, None, f"unreadable CSV row: {e}", "")
                continue
            if len(cells) != len(header):
                yield Record(reader.line_num, None, f"expected {len(header)} fields, got {len(cells)}", cells)
                continue
            rec = {n: _csv_value(n, c) for n, c in zip(header, cells, strict=True)}
            yield Record(reader.line_num, rec, None, cells)


def parse_interaction(rec: dict[str, Any], cfg: IngestConfig) -> tuple[str, str, int, float | None]:
    """(user_id, item_id, ts seconds, rating) of one generic row."""
    user = req_id(rec, "user_id")
    item = req_id(rec, "item_id")
    seconds = req_int(rec, "timestamp", "seconds")
    return user, item, check_ts(seconds, "timestamp", seconds, "s", cfg), opt_rating(rec, "rating")


def _category(value: Any) -> list[str]:
    if value is None or isinstance(value, list):
        return str_list(value, "category")
    if not isinstance(value, str):
        raise RowError(f"field category: expected 'A > B' path or list of strings, got {show(value)}")
    return [c.strip() for c in value.split(">") if c.strip()]


def parse_item(rec: dict[str, Any]) -> tuple[str, str | None, list[str], str | None, str]:
    """(item_id, title, categories, description, extra) of one generic item row."""
    item = req_id(rec, "item_id")
    categories = _category(rec.get("category"))
    return (
        item,
        opt_text(rec, "title"),
        categories,
        opt_text(rec, "description"),
        extra_json(rec, ITEM_FIELDS),
    )


def discover(source: SourceConfig, cfg: IngestConfig) -> list[RawFile]:
    """Every `<path>/<Domain>/{interactions,items}.{parquet,csv}`."""
    root = Path(source.path)
    if not root.is_dir():
        raise IngestError(f"ingest.sources[].path {root}: not a directory")
    found: dict[tuple[str, Table], list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for table in ("interactions", "items"):
            paths = [
                folder / f"{table}.{ext}"
                for ext in ("parquet", "csv")
                if (folder / f"{table}.{ext}").is_file()
            ]
            domain = domain_for(folder.name, source, folder) if paths else None
            if domain is not None:
                found.setdefault((domain, table), []).extend(paths)
    parsers = {"interactions": partial(parse_interaction, cfg=cfg), "items": parse_item}
    files = []
    for (domain, table), path in unique_files(found).items():
        fields = FieldMap(NATIVE, table, source.fields, str(path))
        read = (
            partial(parquet_records, path, table, fields, cfg)
            if path.suffix == ".parquet"
            else partial(csv_records, path, table, fields)
        )
        column_wise = path.suffix == ".parquet" and table == "interactions"
        fast = partial(fast_parquet_interactions, path, fields, cfg) if column_wise else None
        files.append(RawFile(path, table, domain, read, parsers[table], fields, fast))
    return files
