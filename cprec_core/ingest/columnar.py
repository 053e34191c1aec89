"""Column-wise reading of JSON-lines files, with the per-row reader for every row it cannot vouch for.

A format reader that knows its columns (e.g. Amazon 2023 reviews) hands `fast_json_lines` an
Arrow schema, an `accept` rule and a `convert` function. The file is read in blocks of lines;
pyarrow parses a whole block at once when every line of it holds exactly one JSON object of that
schema; `accept` then marks, column-wise, the rows that certainly pass the reader's per-row
checks. Those rows come out as one Arrow table per block (bronze columns + source_line). Every
other line (a block pyarrow refuses, a blank line, a row `accept` is unsure of) goes through the
per-row path (ingest/common.py) unchanged, so a bad row gets exactly the quarantine reason it
always had, and a row `accept` was merely cautious about is still kept. A block pyarrow refuses
is halved until the lines it can read are found, so one bad line does not cost its whole block.

`accept` must be conservative: a row it accepts must be one the per-row parser would accept with
the same values. tests/unit/test_ingest_columnar.py holds the two paths to the same bronze and
quarantine on hostile files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from cprec_core.ingest.common import (
    FIELD_ALIASES,
    STREAM_ERRORS,
    FieldMap,
    Record,
    decode_line,
    json_record,
    open_binary,
    text_lines,
)

BLOCK_LINES = 65_536  # lines parsed per pyarrow call: ~20-40 MB of reviews, bounded memory
CHUNK_BYTES = 16 << 20  # decompressed bytes read at a time and split into lines in C
PARSE_CHUNK = 1 << 20  # pyarrow parses a block in chunks of this many bytes on its threads; a longer line
# cannot be read column-wise and takes the per-row path

OPEN, CLOSE, BRACKET, NEWLINE, CR = (ord(c) for c in "{}[\n\r")
NESTING = 256  # brackets a line may hold and still be read column-wise (Python's json recurses)
NON_PYTHON_NUMBER = re.compile(
    rb"[:,\[]\s*(?:-?Inf(?!inity)|-NaN)"
)  # pyarrow reads these, json.loads refuses

Accept = Callable[[pa.Table], np.ndarray]  # the rows certainly valid (a bool mask)
Convert = Callable[[pa.Table], pa.Table]  # accepted rows → bronze columns (without source_line, domain)
Lines = tuple[int, list[bytes]]  # the number of the first line, the lines (without their newline)


def fast_json_lines(
    path: Path,
    fields: FieldMap,
    schema: pa.Schema,
    accept: Accept,
    convert: Convert,
    optional: tuple[str, ...] = (),
) -> Iterator[Record | pa.Table]:
    """Per block of lines: a table of the accepted rows (bronze columns + source_line), then a
    Record for each other line, as the per-row reader would give it. Mapped field names (a
    configured ingest.sources[].fields) need the per-row reader for every row; so does a line
    holding another name of an `optional` field (canonical names, e.g. rating: `overall`), which
    the per-row reader would read where the columns see a null."""
    own = set(fields.native.values())
    others = [re.escape(a.encode()) for c in optional for a in FIELD_ALIASES[c] if a not in own]
    # one regex scan of a block finds any of those names (a `in` per name scanned it once each)
    avoid = re.compile(rb'"(?:' + b"|".join(others) + rb')"') if others else None

    def per_row(rec: Record) -> Record:
        return rec if rec.value is None else rec._replace(value=fields.apply(rec.value))

    for block in _blocks(path):
        if isinstance(block, Record):
            yield per_row(block)
            continue
        for (first, lines), table in (
            [(block, None)] if fields.configured else _segments(block, schema, avoid)
        ):
            ok = np.zeros(len(lines), dtype=bool) if table is None else accept(table)
            if ok.any():
                numbers = np.arange(first, first + len(lines), dtype=np.int64)[ok]
                yield convert(table.filter(pa.array(ok))).append_column("source_line", pa.array(numbers))
            for i in np.flatnonzero(~ok):
                line_no, raw = first + int(i), lines[i]
                yield per_row(json_record(line_no, *decode_line(raw, line_no), raw))


def _blocks(path: Path) -> Iterator[Lines | Record]:
    """The file's lines in blocks of at most BLOCK_LINES. A stream that breaks off is read again
    from the first line not yet given, by the per-row reader: its Records, ending with the break."""
    first, tail = 1, b""
    with open_binary(path) as stream:
        while True:
            try:
                chunk = stream.read(CHUNK_BYTES)
            except STREAM_ERRORS:
                break
            if not chunk:
                if tail:
                    yield first, [tail]
                return
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for i in range(0, len(lines), BLOCK_LINES):
                yield first + i, lines[i : i + BLOCK_LINES]
            first += len(lines)
    with open_binary(path) as again:
        for line_no, text, error, raw in text_lines(again):
            if line_no >= first:
                yield json_record(line_no, text, error, raw)


def _segments(
    block: Lines, schema: pa.Schema, avoid: re.Pattern[bytes] | None
) -> Iterator[tuple[Lines, pa.Table | None]]:
    """The block as consecutive runs of lines, each with its table, or None for a single line
    pyarrow cannot read: a block it refuses is halved until the lines it can read are found (a
    bad line costs ~2 parses of its block, not a per-row block)."""
    first, lines = block
    if not lines:
        return
    table = _parse_block(lines, schema, avoid)
    if table is not None or len(lines) == 1:
        yield block, table
        return
    half = len(lines) // 2
    yield from _segments((first, lines[:half]), schema, avoid)
    yield from _segments((first + half, lines[half:]), schema, avoid)


def _parse_block(lines: list[bytes], schema: pa.Schema, avoid: re.Pattern[bytes] | None) -> pa.Table | None:
    """The lines as one table, one row per line, or None unless pyarrow reads every line as the
    per-row reader would, as one object. Refused here, for the per-row reader to judge: a NUL byte
    or invalid UTF-8 (pyarrow does not check those); a line that does not start with `{` and end
    with `}` (a blank line pyarrow skips, a byte-order mark, an object spanning lines); a line with
    more than NESTING brackets (Python's json stops at its recursion limit, pyarrow does not);
    NaN/Inf spellings pyarrow accepts and Python does not (Inf, -NaN); a name `avoid` finds; anything
    pyarrow fails to parse; a row count other than the line count (two objects on one line)."""
    data = b"\n".join(lines)
    if b"\x00" in data or (avoid is not None and avoid.search(data)):
        return None
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if (b"Inf" in data or b"-NaN" in data) and NON_PYTHON_NUMBER.search(data):
        return None
    buf = np.frombuffer(data + b"\n", dtype=np.uint8)
    ends = np.flatnonzero(buf == NEWLINE)  # every line's newline (the last one appended)
    starts = np.concatenate(([0], ends[:-1] + 1))
    last = ends - 1 - (buf[ends - 1] == CR)  # a line's last byte, before a CRLF's \r
    if (buf[starts] != OPEN).any() or (buf[last] != CLOSE).any():  # an empty line starts with its newline
        return None
    # brackets per line by bisection over their few positions (np.add.reduceat: 27x slower)
    at = np.flatnonzero((buf == OPEN) | (buf == BRACKET))
    brackets = np.searchsorted(at, ends) - np.searchsorted(at, starts)
    if (brackets > NESTING).any():
        return None
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        table = pa_json.read_json(
            pa.BufferReader(pa.py_buffer(buf)),
            read_options=pa_json.ReadOptions(block_size=PARSE_CHUNK),
            parse_options=options,
        )
    except (pa.ArrowException, UnicodeDecodeError, ValueError):
        return None
    return table.select(schema.names) if table.num_rows == len(lines) else None
