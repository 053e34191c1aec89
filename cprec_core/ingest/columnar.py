"""Column-wise reading of JSON-lines files, with the per-row reader for every row it cannot vouch for.

A format reader that knows its columns hands `fast_json_lines` an Arrow schema, an `accept` rule and
a `convert` function (`JsonReviews` makes the three for the Amazon 2014/2018/2023 reviews). The file
is read in blocks of lines; pyarrow parses a whole block at once when every line of it holds exactly
one JSON object of that schema; `accept` then marks, column-wise, the rows that certainly pass the
reader's per-row checks. Those rows come out as one Arrow table per block (bronze columns +
source_line). Every other line (a block pyarrow refuses, a blank line, a row `accept` is unsure of)
goes through the per-row path (ingest/common.py) unchanged, so a bad row gets exactly the quarantine
reason it always had, and a row `accept` was merely cautious about is still kept. A block pyarrow
refuses is halved until the lines it can read are found, so one bad line does not cost its whole
block.

`accept` must be conservative: a row it accepts must be one the per-row parser would accept with
the same values. tests/unit/test_ingest_columnar.py holds the two paths to the same bronze and
quarantine on hostile files.

The generic reader's Parquet interactions need no parsing: generic.fast_parquet_interactions holds
their Arrow batches to the same contract, with the same id rule (`plain_ids`).

A file whose rows pyarrow cannot vouch for (Amazon 2023 metadata keeps every other field as exact
JSON text) is read by `parsed_json_lines`: the same blocks, each line through json and the reader's
own per-row parse, the kept rows as one table per run of lines, without the per-row reader's
per-line machinery around them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from cprec_core.config import IngestConfig
from cprec_core.ingest.common import (
    FIELD_ALIASES,
    STREAM_ERRORS,
    FieldMap,
    Record,
    RowError,
    decode_line,
    json_record,
    map_record,
    open_binary,
    stream_error,
    text_lines,
)

BLOCK_LINES = 65_536  # lines parsed per pyarrow call: ~20-40 MB of reviews, bounded memory
CHUNK_BYTES = 16 << 20  # decompressed bytes read at a time and cut into blocks at line ends
PARSE_CHUNK = 1 << 20  # pyarrow parses a block in chunks of this many bytes on its threads; a longer line
# cannot be read column-wise and takes the per-row path

OPEN, CLOSE, NEWLINE, CR = (ord(c) for c in "{}\n\r")
NESTING = 256  # brackets a line may hold and still be read column-wise (Python's json recurses)
# NaN/Inf spellings pyarrow reads and json.loads refuses (Inf, -NaN), in RE2 syntax; RE2 has no
# lookahead, so `Infinity` (which both read) is refused too and its line read per row
NON_PYTHON_NUMBER = r"[:,\[][ \t\r\n]*(?:-?Inf|-NaN)"

ESCAPED_KEY = r'\\u[0-9a-fA-F]{4}[^"\\]*"[ \t\r\n]*:'  # a key with a \u escape (RE2)
SAFE_ID = r"^[\x21-\x7e]+$"  # printable ASCII without spaces: a per-row reader keeps such an id as it is
Accept = Callable[[pa.Table], np.ndarray]  # the rows certainly valid (a bool mask)
Convert = Callable[[pa.Table], pa.Table]  # accepted rows → bronze columns (without source_line, domain)


class Block(NamedTuple):
    """Consecutive lines of a file."""

    first: int  # the number of its first line
    data: bytes  # its lines, each ending with a newline
    ends: np.ndarray  # the offset of each line's newline in `data`


def fast_json_lines(
    path: Path,
    fields: FieldMap,
    schema: pa.Schema,
    accept: Accept,
    convert: Convert,
    optional: tuple[str, ...] = (),
    literal_fallback: bool = False,
) -> Iterator[Record | pa.Table]:
    """Per block of lines: a table of the accepted rows (bronze columns + source_line), then a
    Record for each other line, as the per-row reader would give it. Mapped field names (a
    configured ingest.sources[].fields) need the per-row reader for every row; so does a line
    holding another name of an `optional` field (canonical names, e.g. rating: `overall`), which
    the per-row reader would read where the columns see a null. `literal_fallback` as the per-row
    reader's json_records (a Python-literal line is read per row)."""
    own = set(fields.native.values())
    others = [re.escape(a) for c in optional for a in FIELD_ALIASES[c] if a not in own]
    # one RE2 scan of a block, without the GIL, finds those names (also spelt with \u escapes, which
    # the scan cannot read: any key holding one) and the numbers Python refuses
    names = [f'"(?:{"|".join(others)})"', ESCAPED_KEY] if others else []
    refuse = "|".join([NON_PYTHON_NUMBER, *names])

    for block in _blocks(path, literal_fallback):
        if isinstance(block, Record):
            yield map_record(block, fields)
            continue
        for part, table in [(block, None)] if fields.configured else _segments(block, schema, refuse):
            ok = np.zeros(len(part.ends), dtype=bool) if table is None else accept(table)
            if ok.any():
                numbers = np.arange(part.first, part.first + len(ok), dtype=np.int64)[ok]
                yield convert(table.filter(pa.array(ok))).append_column("source_line", pa.array(numbers))
            if ok.all():
                continue
            lines = part.data.split(b"\n")  # only a block holding a row the columns do not vouch for
            for i in np.flatnonzero(~ok):
                line_no, raw = part.first + int(i), lines[i]
                record = json_record(line_no, *decode_line(raw, line_no), raw, literal_fallback)
                yield map_record(record, fields)


@dataclass(frozen=True)
class JsonReviews:
    """A JSON-lines reviews format read column-wise: its user, item, timestamp and rating fields
    (the format's NATIVE interactions names), its rating bounds and its timestamp unit (units per
    second: 1000 for milliseconds)."""

    names: dict[str, str]  # user, item, timestamp, rating -> the format's field
    rating_bounds: tuple[float, float]
    per_second: int = 1

    def read(
        self, path: Path, fields: FieldMap, cfg: IngestConfig, literal_fallback: bool = False
    ) -> Iterator[Record | pa.Table]:
        """The file through fast_json_lines (a Python-literal line per row with `literal_fallback`)."""
        n = self.names
        types = {"user": pa.string(), "item": pa.string(), "timestamp": pa.int64(), "rating": pa.float64()}
        schema = pa.schema([(n[key], t) for key, t in types.items()])
        accept = partial(self.accept, cfg=cfg)
        return fast_json_lines(
            path, fields, schema, accept, self.convert, ("rating",), literal_fallback=literal_fallback
        )

    def accept(self, table: pa.Table, cfg: IngestConfig) -> np.ndarray:
        """The reviews the format's per-row parse certainly keeps unchanged: plain ids within
        ingest.max_id_chars, a timestamp whose whole seconds lie within [min_ts, max_ts], a rating
        that is null or finite within bounds. Anything else (a missing field, an id with spaces or
        non-ASCII text, a negative timestamp, which the per-row parse floors, ...) is left to it."""
        n, unit = self.names, self.per_second
        ids = plain_ids(table[n["user"]], cfg.max_id_chars) & plain_ids(table[n["item"]], cfg.max_id_chars)
        when = within(table[n["timestamp"]], max(cfg.min_ts, 0) * unit, cfg.max_ts * unit + unit - 1)
        return ids & when & null_or_within(table[n["rating"]], *self.rating_bounds)

    def convert(self, table: pa.Table) -> pa.Table:
        """Accepted reviews as bronze columns: user_id, item_id, ts (seconds), rating."""
        n = self.names
        return pa.table(
            {
                "user_id": table[n["user"]],
                "item_id": table[n["item"]],
                "ts": pc.divide(table[n["timestamp"]], self.per_second),  # non-negative: division floors
                "rating": table[n["rating"]],
            }
        )


def parsed_json_lines(
    path: Path, fields: FieldMap, parse: Callable[[dict[str, Any]], tuple[Any, ...]], schema: pa.Schema
) -> Iterator[Record | pa.Table]:
    """Per run of lines that `parse` keeps, one table of `schema` (its rows, column by column); for
    every other line, in file order, the Record the per-row reader gives it. `parse` is the reader's
    per-row parse and size check (raising RowError), so a row is kept here exactly when the per-row
    reader keeps it; a line json refuses (a BOM, a NUL, invalid UTF-8, a blank) or `parse` rejects
    is read again by the per-row reader for its reason."""
    for block in _blocks(path):
        if isinstance(block, Record):
            yield map_record(block, fields)
            continue
        kept: list[tuple[Any, ...]] = []
        for i, raw in enumerate(block.data.split(b"\n")[:-1]):
            row = _parse_line(raw, fields, parse)
            if row is not None:
                kept.append(row)
                continue
            if kept:
                yield _table(kept, schema)
                kept = []
            line_no = block.first + i
            yield map_record(json_record(line_no, *decode_line(raw, line_no), raw), fields)
        if kept:
            yield _table(kept, schema)


def _parse_line(
    raw: bytes, fields: FieldMap, parse: Callable[[dict[str, Any]], tuple[Any, ...]]
) -> tuple[Any, ...] | None:
    """The parsed row of one line, or None for a line the per-row reader must judge."""
    try:
        value = json.loads(raw.decode("utf-8"))
        return parse(fields.apply(value)) if type(value) is dict else None
    except (ValueError, RecursionError, RowError):
        return None


def _table(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """Parsed rows as one table."""
    columns = zip(*rows, strict=True)
    return pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema
    )


def plain_ids(ids: pa.ChunkedArray | pa.Array, max_chars: int) -> np.ndarray:
    """The ids a per-row reader keeps as they are (a bool mask): strings of printable ASCII without
    spaces, or integers (kept as their decimal text), at most `max_chars` long. Anything else,
    nulls included, is left to the per-row reader."""
    if pa.types.is_integer(ids.type):
        ok = pc.less_equal(pc.binary_length(pc.cast(ids, pa.string())), max_chars)
    elif pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
        short = pc.less_equal(pc.binary_length(ids), max_chars)
        ok = pc.and_kleene(pc.match_substring_regex(ids, SAFE_ID), short)
    else:
        return np.zeros(len(ids), dtype=bool)
    return mask(ok)


def within(values: pa.ChunkedArray | pa.Array, low: float, high: float) -> np.ndarray:
    """low <= value <= high (a bool mask; null is False). Integer columns compare against bounds cut
    to their type's range, so an unsigned column or a bound beyond 64 bits compares, not fails."""
    if pa.types.is_integer(values.type):
        info = np.iinfo(values.type.to_pandas_dtype())
        low, high = max(math.ceil(low), int(info.min)), min(math.floor(high), int(info.max))
        if low > high:
            return np.zeros(len(values), dtype=bool)
        low, high = pa.scalar(low, values.type), pa.scalar(high, values.type)
    return mask(pc.and_kleene(pc.greater_equal(values, low), pc.less_equal(values, high)))


def null_or_within(values: pa.ChunkedArray | pa.Array, low: float, high: float) -> np.ndarray:
    """Null, or low <= value <= high (a bool mask; NaN is False)."""
    return mask(pc.is_null(values)) | within(values, low, high)


def mask(flags: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A kleene bool array as a numpy mask, null as False."""
    return pc.fill_null(flags, False).to_numpy(zero_copy_only=False)


def _blocks(path: Path, literal_fallback: bool = False) -> Iterator[Block | Record]:
    """The file's lines in blocks of at most BLOCK_LINES, each one bytes object cut from the
    decompressed stream (the lines are never split apart and joined again). A stream that breaks
    off is read again from the first line not yet given, by the per-row reader: its Records, ending
    with the break (or, where the gzip module breaks before that line, ISA-L's break at it)."""
    first, tail = 1, b""
    with open_binary(path, fast=True) as stream:
        while True:
            try:
                chunk = stream.read(CHUNK_BYTES)
            except STREAM_ERRORS as e:
                broke = e
                break
            if not chunk and not tail:
                return
            data = tail + chunk if chunk else tail + b"\n"  # the last line may lack its newline
            cut = data.rfind(b"\n") + 1  # whole lines end here; the rest waits for the next read
            data, tail = data[:cut], data[cut:]
            for block in _cut(first, data):
                yield block
                first += len(block.ends)
            if not chunk:
                return
    ended = False  # whether the gzip module's read reached the first line not given
    with open_binary(path) as again:
        for line_no, text, error, raw in text_lines(again):
            if line_no >= first:
                ended = True
                yield json_record(line_no, text, error, raw, literal_fallback)
    if not ended:  # it broke before ISA-L did (zlib drops its last output on a bad block): ISA-L's break
        yield Record(first, None, stream_error(broke, first), b"")


def _cut(first: int, data: bytes) -> Iterator[Block]:
    """Whole lines (`data` empty or ending with a newline) as blocks of at most BLOCK_LINES."""
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == NEWLINE)
    for i in range(0, len(ends), BLOCK_LINES):
        start = 0 if i == 0 else int(ends[i - 1]) + 1
        part = ends[i : i + BLOCK_LINES]
        yield Block(first + i, data[start : int(part[-1]) + 1], part - start)


def _segments(block: Block, schema: pa.Schema, refuse: str) -> Iterator[tuple[Block, pa.Table | None]]:
    """The block as consecutive runs of lines, each with its table, or None for a single line
    pyarrow cannot read: a block it refuses is halved until the lines it can read are found (a
    bad line costs ~2 parses of its block, not a per-row block)."""
    table = _parse_block(block, schema, refuse)
    n = len(block.ends)
    if table is not None or n == 1:
        yield block, table
        return
    cut = int(block.ends[n // 2 - 1]) + 1
    yield from _segments(Block(block.first, block.data[:cut], block.ends[: n // 2]), schema, refuse)
    yield from _segments(
        Block(block.first + n // 2, block.data[cut:], block.ends[n // 2 :] - cut), schema, refuse
    )


def _parse_block(block: Block, schema: pa.Schema, refuse: str) -> pa.Table | None:
    """The block's lines as one table, one row per line, or None unless pyarrow reads every line as
    the per-row reader would, as one object. Refused here, for the per-row reader to judge: a NUL
    byte or invalid UTF-8 (pyarrow does not check those); a line that does not start with `{` and
    end with `}` (a blank line pyarrow skips, a byte-order mark, an object spanning lines); a line
    with more than NESTING brackets (Python's json stops at its recursion limit, pyarrow does not);
    what `refuse` matches (NaN/Inf spellings Python does not read, another name of a field); anything
    pyarrow fails to parse; a row count other than the line count (two objects on one line)."""
    data, ends = block.data, block.ends
    if b"\x00" in data:
        return None
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    whole = pa.Array.from_buffers(
        pa.large_binary(),
        1,
        [None, pa.py_buffer(np.array([0, len(data)], dtype=np.int64)), pa.py_buffer(data)],
    )
    if pc.match_substring_regex(whole, refuse)[0].as_py():
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    starts = np.concatenate(([0], ends[:-1] + 1))
    last = ends - 1 - (buf[ends - 1] == CR)  # a line's last byte, before a CRLF's \r
    if (buf[starts] != OPEN).any() or (buf[last] != CLOSE).any():  # an empty line starts with its newline
        return None
    # brackets per line by bisection over their few positions (np.add.reduceat: 27x slower);
    # `[` and `{` are the only bytes that OR 0x20 makes `{`
    at = np.flatnonzero((buf | 0x20) == OPEN)
    brackets = np.searchsorted(at, ends) - np.searchsorted(at, starts)
    if (brackets > NESTING).any():
        return None
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        table = pa_json.read_json(
            pa.BufferReader(pa.py_buffer(data)),
            read_options=pa_json.ReadOptions(block_size=PARSE_CHUNK),
            parse_options=options,
        )
    except (pa.ArrowException, UnicodeDecodeError, ValueError):
        return None
    return table.select(schema.names) if table.num_rows == len(ends) else None
